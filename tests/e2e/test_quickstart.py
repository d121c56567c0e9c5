"""The README's first command, for real: server + demo school + one enrolled agent reporting."""

import os
import socket
import subprocess

import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_quickstart_brings_up_a_reporting_agent(repo_root, tmp_path):
    env = dict(os.environ, KALKAN_DEMO_STATE=str(tmp_path / "demo"), KALKAN_DEMO_PORT=str(_free_port()),
               KALKAN_DEMO_ONESHOT="1", KALKAN_DEMO_COLLECTORS="heartbeat")
    done = subprocess.run(["bash", str(repo_root / "install" / "quickstart.sh")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "The agent is enrolled and reporting" in done.stdout
    assert "admin / " in done.stdout
    # The server saw the workstation: its status line says the server is reachable and nothing waits.
    assert "Events waiting to be sent:         0" in done.stdout
    assert (tmp_path / "demo" / "server" ).is_dir()
