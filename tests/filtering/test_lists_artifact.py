"""Category lists as a server artifact, with real processes (issue 12, part 1).

A local HTTP server serves the UT1-format fixture tarball (ETag / Last-Modified / 304).
`kalkan-server lists update` (the real CLI) fetches, verifies, compiles and publishes it; a
real `kalkan-agent run` fetches the index by its hash, and the proxy's engine enforces it.
A damaged download is refused (nothing published); a damaged artifact on the way to the
agent is refused too and the seat keeps its last good index and says so in its health.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.artifacts import current_index, current_sha
from tests.support.agent_process import AgentProcess
from tests.support.server import KalkanServerProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "ut1" / "ut1-small.tar.gz"


def fixture_entries(category_folder: str, kind: str = "domains") -> list[str]:
    with tarfile.open(FIXTURE) as tar:
        member = tar.extractfile(f"blacklists/{category_folder}/{kind}")
        return [ln.strip() for ln in member.read().decode().splitlines() if ln.strip()]


class ListsPublisher:
    """A tiny stand-in for the UT1 publisher: one tarball with ETag and Last-Modified."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests: list[dict[str, str]] = []
        publisher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                headers = {k.lower(): v for k, v in self.headers.items()}
                publisher.requests.append({"path": self.path, **headers})
                etag = '"' + hashlib.sha256(publisher.body).hexdigest()[:16] + '"'
                if self.path == "/damaged.tar.gz":
                    body = publisher.body[: len(publisher.body) // 2]  # cut short, Content-Length honest
                elif self.path == "/blacklists.tar.gz":
                    if self.headers.get("If-None-Match") == etag:
                        self.send_response(304)
                        self.end_headers()
                        return
                    body = publisher.body
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", "Thu, 03 Dec 2026 10:00:00 GMT")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def lists_cli(server: KalkanServerProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_server.cli", "lists", *args, "--state-dir",
                           str(server.state_dir)], cwd=REPO, capture_output=True, text=True, timeout=120)


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("lists")
    publisher = ListsPublisher(FIXTURE.read_bytes())
    server = KalkanServerProcess(root / "server").start()
    agent = AgentProcess(root / "agent")
    agent.enroll(server, seat="seat-1")
    agent.start(collectors=["heartbeat"], heartbeat_s=1)
    yield publisher, server, agent
    agent.stop()
    server.stop()
    publisher.close()


def engine_for(agent: AgentProcess):
    """The proxy's engine on this agent's policy and fetched index (the code mitmdump runs)."""
    from agent.proxy.engine import Engine

    raw = json.loads((agent.state_dir / "policy.json").read_text())
    return Engine.from_bundle(raw, index=str(current_index(agent.state_dir,
                                                           raw["filtering"].get("index_sha256"))))


def test_update_publishes_and_the_agent_fetches_by_hash_and_enforces(bench) -> None:
    publisher, server, agent = bench
    result = lists_cli(server, "update", "--source", publisher.url + "/blacklists.tar.gz", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == "published" and len(out["sha256"]) == 64
    added, removed = out["changes"]["gambling"]  # gambling + arjel folders
    assert added >= len(set(fixture_entries("gambling"))) and removed == 0
    sha = out["sha256"]
    # the file the server publishes is content-addressed
    published = server.state_dir / "lists" / f"{sha}.kidx"
    assert hashlib.sha256(published.read_bytes()).hexdigest() == sha
    started = time.monotonic()
    wait(lambda: current_sha(agent.state_dir) == sha, 10, "the agent to fetch the index")
    took = time.monotonic() - started
    assert took < 5, took
    assert hashlib.sha256((agent.state_dir / "indexes" / f"{sha}.kidx").read_bytes()).hexdigest() == sha
    engine = engine_for(agent)
    gambling = fixture_entries("gambling")[3]
    verdict = engine.decide_full(f"http://{gambling}/", group="teacher", user=None, seat="seat-1", room=None,
                                 when=time.time())
    assert not verdict.allowed and verdict.rule == "category" and "gambling" in verdict.categories
    games = fixture_entries("games")[0]
    assert engine.decide_full(f"http://{games}/", group="teacher", user=None, seat="seat-1", room=None,
                              when=time.time()).allowed  # games: allowed for staff by default
    status = agent.wait_status(lambda s: (s.get("collectors", {}).get("filter_lists", {}).get("state") == "ok"
                                          and sha[:12] in s["collectors"]["filter_lists"]["detail"]))
    assert status["filter_lists"]["error"] is None


def test_second_update_asks_conditionally_and_changes_nothing(bench) -> None:
    publisher, server, agent = bench
    before = len(publisher.requests)
    result = lists_cli(server, "update", "--json")  # the remembered source
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "not_modified"
    asked = publisher.requests[before]
    assert asked.get("if-none-match") and asked.get("if-modified-since")


def test_a_damaged_download_is_refused_and_the_last_good_index_stays(bench) -> None:
    publisher, server, agent = bench
    sha_before = current_sha(agent.state_dir)
    result = lists_cli(server, "update", "--source", publisher.url + "/damaged.tar.gz", "--json")
    assert result.returncode == 1
    assert "damaged or cut short" in result.stderr and "last good index stays" in result.stderr
    shown = json.loads(lists_cli(server, "show", "--json").stdout)
    assert shown["current"] == sha_before and "cut short" in shown["last_error"]
    assert current_sha(agent.state_dir) == sha_before


def test_a_damaged_artifact_is_refused_by_the_agent_which_keeps_the_last_good(bench, tmp_path) -> None:
    publisher, server, agent = bench
    from policy_server.filtering.models import FilterIndexArtifact

    good = current_sha(agent.state_dir)
    # a second index (one more list) is compiled by the real CLI from a folder, then damaged in
    # the server's store after publishing, before the agent gets it: the agent must refuse it
    tree = tmp_path / "ut1"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tree, filter="data")
    (tree / "blacklists" / "games" / "domains").write_text("\n".join(fixture_entries("games") +
                                                                    ["new-game.example.kg"]) + "\n")
    agent.stop()  # so that the agent meets the damaged file, not the good one
    result = lists_cli(server, "update", "--source", str(tree), "--json")
    assert result.returncode == 0, result.stderr
    new = json.loads(result.stdout)
    assert new["changes"] == {"games": [1, 0]}  # the record of what changed, per category
    path = server.state_dir / "lists" / f"{new['sha256']}.kidx"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    agent.start(collectors=["heartbeat"], heartbeat_s=1)
    status = agent.wait_status(lambda s: (s.get("filter_lists") or {}).get("error") is not None, timeout=15)
    assert "damaged on the way" in status["filter_lists"]["error"]
    assert current_sha(agent.state_dir) == good
    assert status["collectors"]["filter_lists"]["state"] == "degraded"
    assert "keeping" in status["collectors"]["filter_lists"]["detail"]
    # the proxy's engine still enforces the last good index
    engine = engine_for(agent)
    gambling = fixture_entries("gambling")[3]
    assert not engine.decide_full(f"http://{gambling}/", group="teacher", user=None, seat=None, room=None,
                                  when=time.time()).allowed
    # repaired on the server: the agent retries and gets it
    shutil.copy(path, tmp_path / "damaged")
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with server.db() as db:
        assert db.get(FilterIndexArtifact, new["sha256"]) is not None
    agent.stop()
    agent.start(collectors=["heartbeat"], heartbeat_s=1)
    wait(lambda: current_sha(agent.state_dir) == new["sha256"], 15, "the repaired index")
