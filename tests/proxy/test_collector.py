"""ProxyCollector: a real mitmdump child, supervised and restarted when it dies."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from agent.collectors.base import CollectorContext
from agent.collectors.proxy import (
    ENTRY,
    UVLOOP_MAIN,
    ProxyCollector,
    ProxySettings,
    SettingsError,
    mitmdump_binary,
    mitmdump_command,
)
from policy_server.protocol import CollectorState
from tests.support.proxy_rig import free_port, report_through_proxy, wait_port


class ListSink:
    def __init__(self):
        self.events = []

    def emit(self, event_type, data, *, subject=None, clauses=None):
        self.events.append((event_type, data))
        return "x"


def test_command_line(tmp_path):
    cmd = mitmdump_command(ProxySettings(regular_port=1, transparent_port=2), state_dir=tmp_path,
                           confdir=tmp_path / "c", seat="s1", room="r1")
    assert cmd[cmd.index("--mode") + 1] == "regular@127.0.0.1:1" and "transparent@127.0.0.1:2" in cmd
    assert not [a for a in cmd if a.startswith("transparent@") and "127.0.0.1" not in a and "::1" not in a]
    assert f"kalkan_state_dir={tmp_path}" in cmd and "kalkan_seat=s1" in cmd and "kalkan_room=r1" in cmd


def test_mitmdump_runs_on_uvloop_unless_told_otherwise(tmp_path):
    cmd = mitmdump_command(ProxySettings(), state_dir=tmp_path, confdir=tmp_path / "c", seat=None)
    assert cmd[:2] == [sys.executable, str(UVLOOP_MAIN)] and cmd[2:5] == ["--quiet", "-s", str(ENTRY)]
    cmd = mitmdump_command(ProxySettings(event_loop="asyncio"), state_dir=tmp_path, confdir=tmp_path / "c",
                           seat=None)
    assert cmd[0] == mitmdump_binary() and cmd[1:4] == ["--quiet", "-s", str(ENTRY)]


def test_an_unknown_event_loop_is_named_with_the_choices(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"event_loop": "libuv"}))
    with pytest.raises(SettingsError, match="event_loop must be one of uvloop, asyncio, not 'libuv'"):
        ProxySettings.from_file(path)
    path.write_text(json.dumps({"event_loop": "asyncio"}))
    assert ProxySettings.from_file(path).event_loop == "asyncio"


def test_supervised_child_restarts(tmp_path):
    port = free_port()
    ctx = CollectorContext(sink=ListSink(), state_dir=tmp_path, seat="s1", platform="fake")
    collector = ProxyCollector(ctx, ProxySettings(regular_port=port, transparent_port=0, firewall=False,
                                                  proxy_user="no-such-user-kalkan"))
    collector.start()
    try:
        wait_port(port)
        first = collector.pid()
        assert first and collector.health().state == CollectorState.degraded  # no school CA yet
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while collector.pid() in (None, first):
            assert time.monotonic() < deadline, "mitmdump was not restarted"
            time.sleep(0.1)
        wait_port(port)
        assert collector.restarts == 1 and collector.last_exit == -signal.SIGKILL
    finally:
        collector.stop()
    assert collector.pid() is None and collector.health().state == CollectorState.stopped


def test_settings_file_is_read_and_mistakes_are_named(tmp_path):
    from agent.collectors.proxy import SettingsError

    good = tmp_path / "settings.json"
    good.write_text('{"regular_port": 4000, "extra_args": ["--set", "x=1"], "ca_retry_s": 5}')
    settings = ProxySettings.from_file(good)
    assert settings.regular_port == 4000 and settings.extra_args == ("--set", "x=1")
    assert settings.ca_retry_s == 5
    for text, message in [('{"regular_prot": 1}', "unknown setting(s) regular_prot"),
                          ('{"regular_port": "80"}', "regular_port must be a int"),
                          ('{"firewall": 1}', "firewall must be a bool"),
                          ("[1]", "must be a JSON object"), ("{", "not readable JSON")]:
        good.write_text(text)
        try:
            ProxySettings.from_file(good)
        except SettingsError as exc:
            assert message in str(exc), (text, str(exc))
        else:
            raise AssertionError(f"{text} was accepted")


def test_hosts_line_added_once_and_removed_exactly(tmp_path):
    from agent.proxy import hosts

    path = tmp_path / "hosts"
    path.write_text("127.0.0.1\tlocalhost\n10.0.0.5\tserver.school\n")
    path.chmod(0o644)
    assert hosts.add_entry(path, ["report.kalkan"]) is True
    assert hosts.add_entry(path, ["report.kalkan"]) is False  # idempotent
    lines = path.read_text().splitlines()
    assert lines[:2] == ["127.0.0.1\tlocalhost", "10.0.0.5\tserver.school"]
    assert lines[2].split()[:2] == ["192.0.2.80", "report.kalkan"] and len(lines) == 3
    assert path.stat().st_mode & 0o777 == 0o644
    assert hosts.remove_entry(path) is True and hosts.remove_entry(path) is False
    assert path.read_text() == "127.0.0.1\tlocalhost\n10.0.0.5\tserver.school\n"


@pytest.mark.root
def test_install_script_creates_the_proxy_account_and_uninstall_removes_it_in_a_staged_root(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        shutil.copy(f"/etc/{name}", etc / name)
    script = Path(__file__).resolve().parents[2] / "install" / "install-agent.sh"
    for _ in range(2):  # safe to repeat
        done = subprocess.run([str(script), "--root", str(tmp_path)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
    entries = [line for line in (etc / "passwd").read_text().splitlines() if line.startswith("kalkan-proxy:")]
    assert len(entries) == 1 and entries[0].endswith(":/nonexistent:/usr/sbin/nologin")
    assert (tmp_path / "etc/systemd/system/kalkan-agent.service").is_file()
    assert (tmp_path / "var/lib/kalkan-agent").stat().st_mode & 0o777 == 0o755
    bad = subprocess.run([str(script), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr

    # and its mirror takes everything away again, also safe to repeat
    (tmp_path / "var/lib/kalkan-agent/outbox.sqlite").write_bytes(b"")
    remover = script.with_name("uninstall-agent.sh")
    for _ in range(2):
        done = subprocess.run([str(remover), "--root", str(tmp_path)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
    assert "kalkan-proxy:" not in (etc / "passwd").read_text()
    assert not any(line.startswith("kalkan-proxy:") for line in (etc / "group").read_text().splitlines())
    assert not (tmp_path / "etc/systemd/system/kalkan-agent.service").exists()
    assert not (tmp_path / "var/lib/kalkan-agent").exists()


def test_events_come_over_the_pipe_and_the_proxy_stops_when_the_agent_is_gone(tmp_path):
    """The child as the collector runs it: an event arrives as one JSON line on the inherited
    pipe; closing the agent's end makes the child stop by itself (no orphan keeps the port)."""
    import subprocess

    port = free_port()
    read_fd, write_fd = os.pipe()
    cmd = mitmdump_command(ProxySettings(regular_port=port, transparent_port=0), state_dir=tmp_path,
                           confdir=tmp_path / "conf", seat="s1", event_fd=write_fd)
    proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HOME": str(tmp_path)})
    os.close(write_fd)
    try:
        wait_port(port, proc=proc)
        line = report_through_proxy(port, read_fd)
        assert line["type"] == "web.report" and line["data"]["url"] == "http://x.test/"
        assert line["subject"]["seat"] == "s1"
        # the read end is closed now: the child notices at once, not at its next event
        assert proc.wait(20) is not None
        assert not (tmp_path / "outbox.sqlite").exists()  # nothing written to the agent's state
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.root
def test_a_private_state_dir_is_opened_to_the_proxy_group_only():
    """The proxy's account must reach policy.json; if an administrator made the state dir
    private, the collector lets the proxy's group search it (no listing, no writing)."""
    import pwd
    import shutil
    import stat
    import subprocess
    import tempfile
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "install" / "install-agent.sh"
    subprocess.run([str(script), "--account-only"], check=True, capture_output=True, timeout=60)
    account = pwd.getpwnam("kalkan-proxy")
    parent = Path(tempfile.mkdtemp(prefix="kalkan-state-"))
    parent.chmod(0o755)  # pytest's own tmp is root-only
    try:
        state = parent / "state"
        state.mkdir(mode=0o700)
        policy = state / "policy.json"
        policy.write_text("{}")
        policy.chmod(0o600)

        def proxy_reads_policy() -> bool:
            return subprocess.run(["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
                                   "--clear-groups", "cat", str(policy)], capture_output=True).returncode == 0

        assert not proxy_reads_policy()
        ctx = CollectorContext(sink=ListSink(), state_dir=state, platform="fake")
        ProxyCollector(ctx, ProxySettings(firewall=False))._grant_proxy_access()
        assert proxy_reads_policy()
        st = state.stat()
        assert st.st_gid == account.pw_gid and stat.S_IMODE(st.st_mode) == 0o710  # search, not list
        assert stat.S_IMODE(policy.stat().st_mode) == 0o640 and policy.stat().st_gid == account.pw_gid
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.root
def test_proxy_account_that_cannot_reach_the_state_dir_is_not_used(tmp_path):
    """pytest's tmp is root-only: the child would die at once as kalkan-proxy, so the collector
    runs it as root and says why (and, on Linux, installs no firewall that exempts the wrong uid)."""
    import subprocess
    from pathlib import Path

    from agent.collectors.proxy import unreachable_folder

    script = Path(__file__).resolve().parents[2] / "install" / "install-agent.sh"
    subprocess.run([str(script), "--account-only"], check=True, capture_output=True, timeout=60)
    collector = ProxyCollector(CollectorContext(sink=ListSink(), state_dir=tmp_path / "s", platform="linux"),
                               ProxySettings(firewall=True))
    (tmp_path / "s").mkdir()
    private = next(p for p in [*reversed(tmp_path.parents), tmp_path] if not p.stat().st_mode & 0o001)
    assert collector._proxy_account() is None
    assert f"cannot enter {private}" in collector.account_problem and "chmod o+x" in collector.account_problem
    collector._apply_firewall(collector.ctx.policy)
    assert collector.firewall_problem == collector.account_problem
    import pwd

    assert unreachable_folder(Path("/usr/bin"), pwd.getpwnam("kalkan-proxy")) is None
