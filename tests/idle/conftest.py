"""Idle-locking fixtures: a real Xvfb X server, a lock command that records its
calls, and the real IdleCollector listening on a socket in a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agent.collectors.base import CollectorContext
from agent.collectors.idle import IdleCollector
from policy_server.protocol import IdleSection, PolicyBundle
from tests.support.recording_sink import RecordingSink

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def xvfb():
    """A real X server with the MIT-SCREEN-SAVER extension; yields its DISPLAY."""
    if not shutil.which("Xvfb"):
        pytest.fail("Xvfb is not installed: apt-get install xvfb (listed in install/apt-packages.txt)")
    read_fd, write_fd = os.pipe()
    argv = ["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "640x480x24"]
    proc = subprocess.Popen(argv,
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


def x_input(display: str) -> None:
    """Real input through XTEST, as a user moving the mouse."""
    subprocess.run(["xdotool", "mousemove_relative", "--", "3", "3"], check=True,
                   env={**os.environ, "DISPLAY": display})


@pytest.fixture
def lock_script(tmp_path):
    """A lock command that appends a line to a log; exits with the code in `<log>.rc` if present."""
    log = tmp_path / "lock-calls.log"
    script = tmp_path / "fake-lock"
    script.write_text(f"""#!/bin/sh
echo "locked $(date +%s.%N)" >> {log}
if [ -f {log}.rc ]; then echo "screen locker crashed" >&2; exit $(cat {log}.rc); fi
exit 0
""")
    script.chmod(0o755)
    return script, log


def policy(*, student: int = 600, isuo: int = 120, lock_on_isuo_end: bool = True) -> PolicyBundle:
    section = IdleSection(timeouts_s={"student": student, "teacher": 900}, default_timeout_s=900,
                          isuo_timeout_s=isuo, lock_on_isuo_end=lock_on_isuo_end)
    return PolicyBundle(idle=section)


@pytest.fixture
def sock_dir():
    """A folder every user can enter (the socket must be reachable by non-root helpers)."""
    path = Path(tempfile.mkdtemp(prefix="kalkan-idle-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def idle_collector(sock_dir, tmp_path):
    sink = RecordingSink()
    ctx = CollectorContext(sink=sink, state_dir=tmp_path, seat="lab1-07", policy=policy())
    collector = IdleCollector(ctx, socket_path=sock_dir / "idle.sock", helper_stale_s=5)
    collector.start()
    collector.sink = sink  # for the tests
    yield collector
    collector.stop()


def start_helper(display: str, socket_path: Path, lock_command: Path, *,
                 poll: float = 0.2) -> subprocess.Popen:
    """The real session helper as its own process, as XDG autostart would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent.idle.helper", "--source", "x11", "--display", display,
         "--socket", str(socket_path), "--lock-command", str(lock_command),
         "--read-interval", "0.2", "--poll-interval", str(poll), "-v"],
        cwd=REPO, env={**os.environ, "DISPLAY": display, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_helper(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
