"""Fetch this seat's subordinate CA and the school CA from the server the agent is
enrolled with (`GET /api/v1/ca`; the school CA's key never leaves the server).

Same connection as every other agent call: the server URL, bearer token and pinned
certificate SHA-256 from enrolment (`agent.state`, `agent.server_client`), so the key
of the school CA is only ever handed over to the pinned server's TLS peer.

The long-running agent does not call `fetch_school_ca` itself: checking the CA loads
`cryptography` (~8 MB that would stay for the life of the process, against a 50 MB goal).
`install_school_ca_in_child` runs `kalkan-agent proxy fetch-ca --json` as a short-lived child
process instead and reads its exit code and one JSON line; the child's memory goes back to
the system when it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.proxy.ca import check_ca
from agent.server_client import ServerClient, error_detail
from agent.state import AgentState

CA_PATH = "/api/v1/ca"


class CaFetchError(RuntimeError):
    pass


@dataclass
class SeatCa:
    """What `GET /api/v1/ca` gives: this seat's CA (certificate and key) and the school CA."""

    cert_pem: str
    key_pem: str
    root_pem: str
    expires_at: str | None = None

    def __iter__(self):  # (cert_pem, key_pem), as callers unpacked before
        return iter((self.cert_pem, self.key_pem))


def fetch_school_ca(state_dir: Path) -> SeatCa:
    """This seat's CA from the server; CaFetchError says what to do when it fails."""
    state = AgentState(state_dir)
    if not state.paths.config.is_file():
        raise CaFetchError("not enrolled yet: enrol with `kalkan-agent enroll`, then the school CA is "
                           "fetched by itself")
    config = state.load_config()
    client = ServerClient(config.server_url, token=state.read_token(), sha256=config.pin_set())
    try:
        response = client.http.get(CA_PATH)
    except Exception as exc:  # network, TLS pin mismatch: all mean "try again later"
        raise CaFetchError(f"cannot reach the server for the school CA: {exc}") from None
    finally:
        client.close()
    if response.status_code != 200:
        raise CaFetchError(f"the server refused the school CA ({response.status_code}): "
                           f"{error_detail(response)}")
    try:
        body = response.json()
        cert_pem, key_pem = body["cert_pem"], body["key_pem"]
        root_pem = body.get("root_pem") or cert_pem  # a server from before seat CAs: the root itself
        expires_at = body.get("expires_at")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CaFetchError("the server's answer to GET /api/v1/ca has no cert_pem/key_pem") from None
    check_ca(cert_pem, key_pem)
    check_ca(root_pem)
    return SeatCa(cert_pem=cert_pem, key_pem=key_pem, root_pem=root_pem, expires_at=expires_at)


# --------------------------------------------------------------------------- the agent's side

CHILD_TIMEOUT_S = 300.0  # update-ca-certificates and certutil for every user: seconds, not minutes


@dataclass
class CaChildResult:
    """What `kalkan-agent proxy fetch-ca --json` reported: where the CA went (never the key)."""

    system: str = ""
    firefox: str = ""
    nss: list[str] = field(default_factory=list)


def ca_child_command(state_dir: Path, root: Path, owner_uid: int | None) -> list[str]:
    """The child's command line (pure: tested on its own)."""
    cmd = [sys.executable, "-m", "agent.cli", "proxy", "fetch-ca", "--json",
           "--state-dir", str(state_dir), "--root", str(root)]
    return cmd + (["--owner-uid", str(owner_uid)] if owner_uid is not None else ["--no-proxy-user"])


def parse_child_answer(returncode: int, stdout: str, stderr: str) -> CaChildResult:
    """The child's result from its exit code and last JSON line; CaFetchError with the child's
    own message when it failed (that message ends up in the proxy collector's health)."""
    answer: dict = {}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            break
    if returncode == 0 and answer.get("ok") is True:
        return CaChildResult(system=str(answer.get("system", "")), firefox=str(answer.get("firefox", "")),
                             nss=[str(db) for db in answer.get("nss", [])])
    if answer.get("error"):
        raise CaFetchError(str(answer["error"]))
    last = (stderr.strip().splitlines() or stdout.strip().splitlines() or ["no output"])[-1]
    raise CaFetchError(f"kalkan-agent proxy fetch-ca exited with code {returncode}: {last}")


def install_school_ca_in_child(state_dir: Path, root: Path, owner_uid: int | None, *,
                               stop: threading.Event | None = None,
                               timeout_s: float = CHILD_TIMEOUT_S) -> CaChildResult:
    """Fetch, check and install the school CA in a short-lived child process (see the module doc).
    Gives up (killing the child) when `stop` is set or after `timeout_s`."""
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the `agent` package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                                    os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(ca_child_command(state_dir, root, owner_uid), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                            close_fds=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                why = "the agent is stopping" if stop is not None and stop.is_set() else \
                    f"it took more than {timeout_s:.0f} s"
                raise CaFetchError(f"kalkan-agent proxy fetch-ca was stopped: {why}") from None
    return parse_child_answer(proc.returncode, stdout, stderr)
