"""The netns lab itself (tests/support/netns_lab.py): what the e2e tests rely on, and that it
leaves nothing behind — not even when building a seat fails half-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_server import protocol
from tests.support.netns_lab import STUDENT, TEACHER, NetnsLab, sh
from tests.support.server import KalkanServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def _ours(lab: NetnsLab) -> list[str]:
    listed = sh("ip", "netns", "list").stdout.split("\n")
    return [line.split()[0] for line in listed if line.strip() and lab.tag in line.split()[0]]


def test_a_seat_has_the_agents_table_and_no_way_out_but_the_proxy(tmp_path) -> None:
    server = KalkanServerProcess(tmp_path / "server").start()
    try:
        def policy(b: protocol.PolicyBundle) -> protocol.PolicyBundle:
            b.groups = [protocol.Group(name="student", kind="student", os_users=[STUDENT]),
                        protocol.Group(name="teacher", kind="teacher", os_users=[TEACHER])]
            b.filtering.allow_list = ["school.test"]
            return b

        server.amend_policy("lab check", policy)
        lab = NetnsLab(["school.test", "news.test"])
        with lab:
            seat = lab.add_seat("seat-1", server)
            assert all(name.startswith("fl-") for name in _ours(lab)) and len(_ours(lab)) == 2
            table = seat.nft_table()
            assert "redirect to :3129" in table and f"meta skuid {lab.proxy_user.uid}" in table
            # the student's web traffic reaches the origin only through the proxy's verdict
            status, body = seat.curl("student", "http://school.test/x")
            assert status == 200 and "ORIGIN OK school.test" in body
            assert seat.blocked("student", "http://news.test/")  # outside a lesson: the allow-list only
            assert not seat.blocked("teacher", "http://news.test/")
            # any other way out is refused for the student (the port is open: root gets through)
            other = ["curl", "-sS", "--max-time", "3", "http://10.79.0.2:8080/"]
            assert "ORIGIN OK" in seat.run("root", other).stdout
            refused = seat.run("student", other)
            assert refused.returncode != 0 and "ORIGIN OK" not in refused.stdout
            # and root (the agent) reaches the server through the seat's forward
            port = server.url.rsplit(":", 1)[1]
            root = seat.run("root", ["curl", "-sk", "--max-time", "5", f"https://127.0.0.1:{port}/healthz"])
            assert root.returncode == 0, root.stderr
            # the agent enrolled with the real server and applied its policy inside the seat
            seat.agent.wait_status(lambda s: s["collectors"]["proxy"]["state"] == "ok", timeout=20)
            files = lab.files
        assert _ours(lab) == [] and not files.exists()
        assert not (Path("/etc/netns") / seat.ns).exists()
        assert seat.agent.proc.poll() is not None
    finally:
        server.stop()


def test_a_failed_seat_leaves_nothing_behind(tmp_path) -> None:
    class NoServer:  # enrolment fails: the namespace and its /etc/netns folder exist by then
        url = "https://127.0.0.1:9"
        fingerprint = "0" * 64

        def make_enrollment_code(self, room=None):
            return "NOPE-NOPE"

    lab = NetnsLab(["school.test"])
    with pytest.raises(RuntimeError, match="enroll failed"), lab:
        lab.add_seat("seat-1", NoServer())
    assert _ours(lab) == [] and not lab.files.exists()
    assert not any(p.name.endswith(lab.tag) for p in Path("/etc/netns").glob("fl-*"))


def test_a_killed_runs_namespaces_are_swept_and_a_live_runs_are_kept(tmp_path) -> None:
    """pytest killed with SIGKILL never reaches `close()`: its `fl-` namespaces, their /etc/netns
    folders and its veths stay.  The next lab's start deletes those whose recorded owner is dead,
    and keeps those of a run still alive (another checkout's, at the same time)."""
    import os
    import signal
    import subprocess
    import sys
    import uuid

    from tests.support import netns_sweep

    tag = uuid.uuid4().hex[:5]
    dead_ns, live_ns, dead_veth = f"fl-kd{tag}", f"fl-kl{tag}", f"fl-v{tag}"
    # a "test run" that makes its namespace, folder and a root-namespace veth, then is SIGKILLed
    child = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, pathlib, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.support import netns_sweep
for name in ({dead_ns!r}, {dead_veth!r}):
    netns_sweep.claim(name)
subprocess.run(["ip", "netns", "add", {dead_ns!r}], check=True)
pathlib.Path("/etc/netns/{dead_ns}").mkdir(parents=True, exist_ok=True)
pathlib.Path("/etc/netns/{dead_ns}/resolv.conf").write_text("nameserver 10.79.0.53\\n")
subprocess.run(["ip", "link", "add", {dead_veth!r}, "type", "veth", "peer", "name", "{dead_veth}b"],
               check=True)
print("made", flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    sleeper = subprocess.Popen(["sleep", "600"])  # the other run, alive
    try:
        assert child.stdout.readline().strip() == "made"
        netns_sweep.claim(live_ns, pid=sleeper.pid)
        sh("ip", "netns", "add", live_ns)
        (Path("/etc/netns") / live_ns).mkdir(parents=True, exist_ok=True)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        names = netns_sweep.namespaces()
        assert dead_ns in names and live_ns in names and dead_veth in netns_sweep.root_links()

        with NetnsLab(["school.test"]) as lab:
            names = netns_sweep.namespaces()
            assert dead_ns not in names and not (Path("/etc/netns") / dead_ns).exists()
            links = netns_sweep.root_links()
            assert dead_veth not in links and f"{dead_veth}b" not in links
            assert not (netns_sweep.OWNERS / dead_ns).exists()
            assert live_ns in names and (Path("/etc/netns") / live_ns).is_dir()  # its owner lives
            assert netns_sweep.owner_alive(lab.net) is True  # the lab records itself as the owner
        assert not (netns_sweep.OWNERS / lab.net).exists()  # and forgets it when it is closed
        sleeper.kill()
        sleeper.wait(10)
        assert netns_sweep.sweep("fl-kl") == [live_ns]  # once that run is gone, it goes too
        assert live_ns not in netns_sweep.namespaces() and not (Path("/etc/netns") / live_ns).exists()
    finally:
        for proc in (child, sleeper):
            if proc.poll() is None:
                proc.kill()
        for name in (dead_ns, live_ns):
            sh("ip", "netns", "del", name, check=False)
            netns_sweep.release(name)
        sh("ip", "link", "del", dead_veth, check=False)
        netns_sweep.release(dead_veth)
