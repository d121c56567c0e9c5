"""The clamd configuration Kalkan ships is accepted by the real clamd and reachable by the agent."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from agent.antivirus.clamd import DEFAULT_SOCKET, ClamdClient, ClamdError
from tests.support.clamd import CLAMD, build_signature_db

SHIPPED = Path(__file__).resolve().parents[2] / "install" / "clamav" / "clamd.conf"


def test_shipped_clamd_conf_starts_clamd(tmp_path):
    text = SHIPPED.read_text()
    assert f"LocalSocket {DEFAULT_SOCKET}" in text, "the agent's default socket and the config agree"
    build_signature_db(tmp_path / "db")
    # same options, but paths in the test's folder, in the foreground, as the current user
    text = re.sub(r"^LocalSocket .*$", f"LocalSocket {tmp_path / 'clamd.ctl'}", text, flags=re.M)
    text = re.sub(r"^DatabaseDirectory .*$", f"DatabaseDirectory {tmp_path / 'db'}", text, flags=re.M)
    text = re.sub(r"^(User|LocalSocketGroup|LogSyslog) .*$", "", text, flags=re.M)
    text = text.replace("Foreground no", "Foreground yes")
    conf = tmp_path / "clamd.conf"
    conf.write_text(text)
    proc = subprocess.Popen([str(CLAMD), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = ClamdClient(tmp_path / "clamd.ctl")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if (tmp_path / "clamd.ctl").exists():
                try:
                    assert client.version().signature_version == "424242"
                    break
                except ClamdError:
                    pass
            time.sleep(0.05)
        else:
            raise AssertionError(f"clamd did not start with the shipped config: {proc.stdout.read()}")
        assert oct((tmp_path / "clamd.ctl").stat().st_mode & 0o777) == "0o660"
    finally:
        proc.terminate()
        proc.wait(10)
