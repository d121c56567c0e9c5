"""The school CA is fetched, checked and installed in a short-lived child process
(`kalkan-agent proxy fetch-ca --json`), so the long-running agent never loads `cryptography`
(~8 MB against the 50 MB footprint goal, docs/agent.md "Footprint").

Real processes throughout: the real `kalkan-server run`, the real `kalkan-agent run` with the
proxy collector (and its real mitmdump), the real child with update-ca-certificates and
certutil against a staged root (platform `fake`).  Which process imported `cryptography` is
recorded by an import trap (tests/support/import_trap.py) in every Python process started,
and checked again in the agent's `/proc/PID/maps` (cryptography's Rust extension).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.proxy.ca_fetch import CaFetchError, ca_child_command, parse_child_answer
from tests.support.agent_process import AgentProcess
from tests.support.import_trap import import_trap, importers
from tests.support.proxy_rig import free_port, wait_port
from tests.support.server import KalkanServerProcess

REPO = Path(__file__).resolve().parents[2]
NO_SUCH_USER = "kalkan-no-such-user"  # the proxy runs as the agent's user: no account to check

# ----------------------------------------------------------------------------- pure parts


def test_child_command_runs_the_agent_cli_with_the_owner() -> None:
    cmd = ca_child_command(Path("/var/lib/kalkan-agent"), Path("/"), 998)
    assert cmd[:5] == [sys.executable, "-m", "agent.cli", "proxy", "fetch-ca"]
    assert "--json" in cmd and cmd[cmd.index("--owner-uid") + 1] == "998"
    assert cmd[cmd.index("--root") + 1] == "/"
    assert "--no-proxy-user" in ca_child_command(Path("/s"), Path("/r"), None)


def test_child_answer_parsing() -> None:
    ok = parse_child_answer(0, 'log line\n{"ok": true, "system": "/s", "firefox": "/f", "nss": ["/a"]}\n', "")
    assert (ok.system, ok.firefox, ok.nss) == ("/s", "/f", ["/a"])
    with pytest.raises(CaFetchError, match="not enrolled yet"):
        parse_child_answer(1, '{"ok": false, "error": "not enrolled yet: enrol"}\n', "fetch-ca: ...")
    with pytest.raises(CaFetchError, match="exited with code 1: ModuleNotFoundError: x"):
        parse_child_answer(1, "", "Traceback ...\nModuleNotFoundError: x\n")
    with pytest.raises(CaFetchError, match="code 0"):  # exit 0 without the JSON line is no success
        parse_child_answer(0, "something else\n", "")


# ----------------------------------------------------------------------------- real processes


def fetch_ca_cli(state_dir: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "proxy", "fetch-ca", "--json",
                           "--no-proxy-user", "--state-dir", str(state_dir), "--root", str(root)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_fetch_ca_refuses_clearly_when_not_enrolled(tmp_path: Path) -> None:
    result = fetch_ca_cli(tmp_path / "state", tmp_path / "root")
    assert result.returncode == 1
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["ok"] is False and "kalkan-agent enroll" in answer["error"]
    assert not (tmp_path / "root").exists()  # nothing half-installed


def _proxy_settings(agent: AgentProcess, **extra) -> int:
    port = free_port()
    settings = {"regular_port": port, "transparent_port": 0, "firewall": False, "proxy_user": NO_SUCH_USER,
                "ca_retry_s": 1, **extra}
    path = agent.state_dir / "collectors" / "proxy" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings))
    return port


def _wait(predicate, timeout: float, what: str, agent: AgentProcess):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s\n{agent.log_text()}")


def test_agent_installs_the_school_ca_through_a_child_and_never_loads_cryptography(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = import_trap(tmp_path, monkeypatch, ["cryptography"])
    with KalkanServerProcess(tmp_path / "server") as server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server, seat="seat-1")
        port = _proxy_settings(agent)
        with agent.start(collectors=["proxy"]):
            confdir = agent.state_dir / "collectors" / "proxy" / "mitmproxy"
            _wait(lambda: (confdir / "kalkan-school-ca.pem").exists(), 60, "the school CA install", agent)
            status = agent.wait_status(lambda s: s["collectors"]["proxy"]["state"] == "ok", timeout=30)
            assert "mitmdump pid" in status["collectors"]["proxy"]["detail"]
            wait_port(port, timeout=30)  # mitmdump restarted with the school CA and listens
            token = (agent.state_dir / "token").read_text().strip()
            with server.agent_client(token) as client:
                served = client.get("/api/v1/ca").json()
            # the proxy's CA file (the seat's own key + seat CA + school CA, private) and the staged
            # system store / Firefox (the school CA); the school CA's key is never on the seat
            assert (confdir / "kalkan-school-ca.pem").read_text().strip() == served["root_pem"].strip()
            proxy_ca = confdir / "mitmproxy-ca.pem"
            text = proxy_ca.read_text()
            assert "PRIVATE KEY" in text and proxy_ca.stat().st_mode & 0o077 == 0
            school_key = server.state_dir / "ca" / "school-ca.key"
            assert school_key.exists() and school_key.read_text().strip() not in text
            assert text.count("BEGIN CERTIFICATE") == 2 and text.rstrip().endswith(served["root_pem"].strip())
            root = agent.state_dir / "collectors" / "proxy" / "root"
            assert (root / "usr/local/share/ca-certificates/kalkan-school-ca.crt").read_text().strip() \
                == served["root_pem"].strip()
            firefox = json.loads((root / "etc/firefox/policies/policies.json").read_text())
            assert firefox["policies"]["Certificates"]["Install"] == [
                "/etc/firefox/policies/kalkan-school-ca.pem"]
            assert (root / "etc/skel/.pki/nssdb/cert9.db").exists()
            assert "fetched from the server and installed" in agent.log_text()

            pid = agent.proc.pid
            # the child (and mitmdump) did import it: the trap works
            assert importers(record, "cryptography"), "the trap saw no process import cryptography"
            assert pid not in importers(record, "cryptography"), "the agent process imported cryptography"
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "cryptography" not in maps
            assert "_ssl" in maps or "libssl" in maps  # the maps check does see extension modules


def test_a_failing_child_is_reported_in_health_with_its_message(tmp_path: Path) -> None:
    server = KalkanServerProcess(tmp_path / "server")
    with server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server, seat="seat-1")
    _proxy_settings(agent)  # the server is gone now: the child cannot reach it
    with agent.start(collectors=["proxy"]):
        status = agent.wait_status(lambda s: "school CA" in s["collectors"]["proxy"]["detail"]
                                   and "cannot reach the server" in s["collectors"]["proxy"]["detail"],
                                   timeout=60)
        assert status["collectors"]["proxy"]["state"] != "ok"
        assert "school CA: cannot reach the server for the school CA" in agent.log_text()
        assert not (agent.state_dir / "collectors/proxy/mitmproxy/kalkan-school-ca.pem").exists()
