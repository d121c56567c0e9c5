"""Fetch the school CA from the server the agent is enrolled with (`GET /api/v1/ca`).

Same connection as every other agent call: the server URL, bearer token and pinned
certificate SHA-256 from enrolment (`agent.state`, `agent.server_client`), so the key
of the school CA is only ever handed over to the pinned server's TLS peer.
"""

from __future__ import annotations

from pathlib import Path

from agent.proxy.ca import check_ca
from agent.server_client import ServerClient, error_detail
from agent.state import AgentState

CA_PATH = "/api/v1/ca"


class CaFetchError(RuntimeError):
    pass


def fetch_school_ca(state_dir: Path) -> tuple[str, str]:
    """(cert_pem, key_pem) from the server; CaFetchError says what to do when it fails."""
    state = AgentState(state_dir)
    if not state.paths.config.is_file():
        raise CaFetchError("not enrolled yet: enrol with `kalkan-agent enroll`, then the school CA is "
                           "fetched by itself")
    config = state.load_config()
    client = ServerClient(config.server_url, token=state.read_token(), sha256=config.server_sha256)
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
    except (ValueError, KeyError, TypeError):
        raise CaFetchError("the server's answer to GET /api/v1/ca has no cert_pem/key_pem") from None
    check_ca(cert_pem, key_pem)
    return cert_pem, key_pem
