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
    # The demo filters by category with the lists shipped in the repository (nothing beside it):
    # the seat fetched the published index by hash, and the proxy's engine blocks by category.
    import json
    import time

    from agent.artifacts import current_index
    from agent.proxy.engine import Engine

    agent_state = tmp_path / "demo" / "agent"
    raw = json.loads((agent_state / "policy.json").read_text())
    assert raw["filtering"]["index_sha256"] and raw["filtering"]["index_sha256"][:16] in done.stdout
    engine = Engine.from_bundle(raw, index=str(current_index(agent_state, raw["filtering"]["index_sha256"])))
    verdict = engine.decide_full("http://pornhub.com/", group="teacher", user=None, seat=None, room=None,
                                 when=time.time())
    assert not verdict.allowed and verdict.rule == "category" and "porn" in verdict.categories
