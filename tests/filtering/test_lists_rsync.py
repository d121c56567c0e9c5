"""rsync as a category-list source (issue 12: "HTTP with ETag/If-Modified-Since, or rsync where
configured"), with real processes: a real rsync daemon started here on 127.0.0.1 serves the
UT1-format fixture (the tarball, a copy cut short, and the unpacked tree); the real
`kalkan-server lists update` fetches it through the `rsync` command, compiles and publishes it;
a real `kalkan-agent run` fetches the index by its hash and the proxy's engine enforces it.
A damaged download or a failed transfer publishes nothing: the last good index stays."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time

import pytest

from agent.artifacts import current_sha
from tests.filtering.test_lists_artifact import FIXTURE, engine_for, fixture_entries, lists_cli, wait
from tests.support.agent_process import AgentProcess
from tests.support.proxy_rig import free_port, wait_port
from tests.support.server import KalkanServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    if shutil.which("rsync") is None:
        pytest.fail("the rsync command is missing: apt-get install rsync (install/apt-packages.txt)")
    root = tmp_path_factory.mktemp("rsync")
    pub, tree = root / "pub", root / "tree"
    pub.mkdir()
    body = FIXTURE.read_bytes()
    (pub / "ut1-small.tar.gz").write_bytes(body)
    (pub / "damaged.tar.gz").write_bytes(body[: len(body) // 2])  # cut short
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tree, filter="data")  # tree/blacklists/<category>/domains
    port = free_port()
    conf = root / "rsyncd.conf"
    conf.write_text(f"pid file = {root / 'rsyncd.pid'}\nlog file = {root / 'rsyncd.log'}\nuse chroot = no\n"
                    "uid = root\ngid = root\n"
                    f"[ut1]\n  path = {pub}\n  read only = yes\n"
                    f"[tree]\n  path = {tree}\n  read only = yes\n")
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}", "--address=127.0.0.1",
                               f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = KalkanServerProcess(root / "server")
    agent = AgentProcess(root / "agent")
    try:
        wait_port(port, timeout=10)
        server.start()
        agent.enroll(server, seat="seat-1")
        agent.start(collectors=["heartbeat"], heartbeat_s=1)
        yield f"rsync://127.0.0.1:{port}", tree / "blacklists", server, agent
    finally:
        agent.stop()
        server.stop()
        daemon.terminate()
        daemon.wait(10)


def test_an_rsync_tarball_is_published_and_the_agent_fetches_and_enforces_it(bench) -> None:
    url, _tree, server, agent = bench
    result = lists_cli(server, "update", "--source", f"{url}/ut1/ut1-small.tar.gz", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "published" and out["source"] == f"{url}/ut1/ut1-small.tar.gz"
    wait(lambda: current_sha(agent.state_dir) == out["sha256"], 10, "the agent to fetch the index")
    gambling = fixture_entries("gambling")[3]
    verdict = engine_for(agent).decide_full(f"http://{gambling}/", group="teacher", user=None, seat="seat-1",
                                            room=None, when=time.time())
    assert not verdict.allowed and verdict.rule == "category" and "gambling" in verdict.categories


def test_nothing_received_means_not_modified(bench) -> None:
    _url, _tree, server, _agent = bench
    result = lists_cli(server, "update", "--json")  # the remembered rsync source, unchanged there
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "not_modified"


def test_an_rsync_tree_is_mirrored_and_only_the_change_is_published(bench) -> None:
    url, tree, server, agent = bench
    before = current_sha(agent.state_dir)
    with open(tree / "gambling" / "domains", "a") as fh:
        fh.write("new-casino.example\n")
    result = lists_cli(server, "update", "--source", f"{url}/tree/blacklists/", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "published" and out["sha256"] != before
    assert out["changes"]["gambling"] == [1, 0]  # the one added entry, against the tarball's index
    wait(lambda: current_sha(agent.state_dir) == out["sha256"], 10, "the agent to fetch the new index")
    mirror = next((server.state_dir / "lists" / "rsync").glob("*/tree"))
    assert "new-casino.example" in (mirror / "gambling" / "domains").read_text()
    # taken off at the publisher: the mirror follows (rsync --delete / update) and it is published
    domains = tree / "gambling" / "domains"
    kept = [ln for ln in domains.read_text().splitlines() if ln != "new-casino.example"]
    domains.write_text("\n".join(kept) + "\n")
    shutil.rmtree(tree / "games")
    out = json.loads(lists_cli(server, "update", "--json").stdout)
    assert out["status"] == "published" and out["changes"]["gambling"] == [0, 1]
    assert out["changes"]["games"][0] == 0 and out["changes"]["games"][1] > 0
    assert not (mirror / "games").exists()


def test_a_damaged_rsync_download_is_refused_and_the_last_good_index_stays(bench) -> None:
    url, _tree, server, agent = bench
    good = json.loads(lists_cli(server, "show", "--json").stdout)["current"]
    result = lists_cli(server, "update", "--source", f"{url}/ut1/damaged.tar.gz", "--json")
    assert result.returncode == 1
    assert "damaged or cut short" in result.stderr and "last good index stays" in result.stderr
    shown = json.loads(lists_cli(server, "show", "--json").stdout)
    assert shown["current"] == good and "cut short" in shown["last_error"]
    # asked again (nothing new to receive: the mirror already has it), refused again
    again = lists_cli(server, "update", "--source", f"{url}/ut1/damaged.tar.gz", "--json")
    assert again.returncode == 1 and "damaged or cut short" in again.stderr
    assert current_sha(agent.state_dir) == good


def test_a_failed_transfer_names_the_fix_and_keeps_the_last_good(bench) -> None:
    url, _tree, server, agent = bench
    good = json.loads(lists_cli(server, "show", "--json").stdout)["current"]
    for source in (f"{url}/no-such-module/x.tar.gz", f"{url}/ut1/missing.tar.gz",
                   f"rsync://127.0.0.1:{1}/ut1/ut1-small.tar.gz"):
        result = lists_cli(server, "update", "--source", source, "--json")
        assert result.returncode == 1, source
        assert f"rsync from {source} failed" in result.stderr and "last good index stays" in result.stderr
    result = lists_cli(server, "update", "--source", "rsync://127.0.0.1/", "--json")
    assert result.returncode == 1 and "rsync://host/module/path" in result.stderr
    assert json.loads(lists_cli(server, "show", "--json").stdout)["current"] == good
    assert current_sha(agent.state_dir) == good
