"""The school server serves the seat's install (policy_server/operations/seat.py): the pinned
download works and a wrong pin is refused; the per-room command, run in a throwaway root
(tests/deploy/rootfs.py, this machine's network to reach the test server), installs the
package, enrols with the room's code and seat name, and the server knows the seat."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from unittest import mock

import httpx
import pytest
from sqlalchemy import select

from policy_server.db.models import Workstation
from policy_server.operations.seat import pubkey_pin
from policy_server.operations.service import install_command
from tests.deploy.rootfs import OverlayRoot, available
from tests.support.server import KalkanServerProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def agent_deb(debs) -> Path:
    return debs["kalkan-agent"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, agent_deb):
    root = tmp_path_factory.mktemp("seat")
    (root / "server" / "packages").mkdir(parents=True)
    shutil.copy(agent_deb, root / "server" / "packages" / agent_deb.name)
    with mock.patch.dict(os.environ, {"KALKAN_CHECKS_FIRST_DELAY_S": "600"}):
        proc = KalkanServerProcess(root / "server").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_unknown_pin_is_refused_and_the_script_names_the_package_hash(server, agent_deb):
    script = httpx.get(server.url + "/install/seat.sh", verify=server.verify, timeout=30)
    assert script.status_code == 200
    digest = hashlib.sha256(agent_deb.read_bytes()).hexdigest()
    assert digest in script.text and server.fingerprint in script.text
    assert pubkey_pin(server.cert_path) in script.text
    wrong = "sha256//" + "A" * 43 + "="
    r = subprocess.run(
        ["curl", "-fsSk", "--pinnedpubkey", wrong, server.url + "/install/seat.sh"], capture_output=True
    )
    assert r.returncode == 90 and not r.stdout  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
    ok = subprocess.run(
        [
            "curl",
            "-fsSk",
            "--pinnedpubkey",
            pubkey_pin(server.cert_path),
            server.url + "/install/kalkan-agent.deb",
        ],
        capture_output=True,
    )
    assert ok.returncode == 0 and hashlib.sha256(ok.stdout).hexdigest() == digest


def test_install_command_quotes_everything():
    cmd = install_command("lab 1; rm -rf /", "ABCD-EFGH-JKLM", "https://10.0.0.2:8443", "sha256//abc=")
    assert cmd.startswith("sudo sh -c ")
    inner = shlex.split(cmd)[3]
    assert "--pinnedpubkey sha256//abc= https://10.0.0.2:8443/install/seat.sh" in inner
    assert "--room 'lab 1; rm -rf /'" in inner and "--code ABCD-EFGH-JKLM" in inner
    with pytest.raises(ValueError):
        install_command("lab", "X", "https://s", "0123abcd")


@pytest.mark.root
@pytest.mark.skipif(available() is not None, reason=str(available()))
def test_the_room_command_installs_enrols_and_the_server_knows_the_seat(server, tmp_path):
    code = server.make_enrollment_code(room="lab-7", uses=1)
    command = install_command("lab-7", code, server.url, pubkey_pin(server.cert_path))
    inner = shlex.split(command)[3].replace('"$(hostname)"', "lab7-pc05")  # as `sudo sh -c` would run it
    root = OverlayRoot(tmp_path / "root")
    began = time.monotonic()
    out = root.run(inner, net=True, timeout=300)
    seconds = time.monotonic() - began
    assert "enrolled as lab7-pc05" in out.stdout, out.stdout + out.stderr
    assert seconds < 120, f"seat install took {seconds:.0f} s (goal: under 2 minutes)"
    assert root.run("dpkg-query -W -f='${Status}' kalkan-agent").stdout == "install ok installed"
    assert '"seat": "lab7-pc05"' in root.read("/var/lib/kalkan-agent/config.json")
    with server.db() as db:
        ws = db.scalar(select(Workstation).where(Workstation.seat == "lab7-pc05"))
        assert ws is not None and ws.room is not None and ws.room.name == "lab-7"
