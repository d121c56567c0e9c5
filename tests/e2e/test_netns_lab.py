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
