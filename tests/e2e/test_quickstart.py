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
    env = dict(
        os.environ,
        KALKAN_DEMO_STATE=str(tmp_path / "demo"),
        KALKAN_DEMO_PORT=str(_free_port()),
        KALKAN_DEMO_ONESHOT="1",
        KALKAN_DEMO_COLLECTORS="heartbeat",
        KALKAN_SERVER_CONFIG=str(tmp_path / "server.toml"),
        KALKAN_BIN_DIR=str(tmp_path / "bin"),
    )
    done = subprocess.run(
        ["bash", str(repo_root / "install" / "quickstart.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "The agent is enrolled and reporting" in done.stdout
    assert "admin / " in done.stdout
    # The server saw the workstation: its status line says the server is reachable and nothing waits.
    assert "Events waiting to be sent:         0" in done.stdout
    assert (tmp_path / "demo" / "server").is_dir()
    # the commands are on PATH (here: the test's own bin folder) and find the school through
    # the configuration file the quick start wrote, without --state-dir (issue 11)
    assert "state_dir" in (tmp_path / "server.toml").read_text()
    code = subprocess.run(
        [str(tmp_path / "bin" / "kalkan-server"), "enrollment-code"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert code.returncode == 0, code.stderr
    assert len(code.stdout.strip()) == 14
    # a second run appends to the logs, never empties them
    first_log = (tmp_path / "demo" / "server.log").read_text()
    again = subprocess.run(
        ["bash", str(repo_root / "install" / "quickstart.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "demo" / "server.log").read_text().startswith(first_log)
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



def test_a_second_quickstart_is_refused_and_leaves_the_logs(repo_root, tmp_path):
    import fcntl

    state = tmp_path / "demo"
    state.mkdir()
    (state / "server.log").write_text("the running one's log\n")
    (state / "quickstart.pid").write_text("4242\n")
    env = dict(
        os.environ,
        KALKAN_DEMO_STATE=str(state),
        KALKAN_DEMO_PORT=str(_free_port()),
        LANG="ru_RU.UTF-8",
        KALKAN_SERVER_CONFIG=str(tmp_path / "server.toml"),
        KALKAN_BIN_DIR=str(tmp_path / "bin"),
    )
    with open(state / "quickstart.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the running quick start holds it
        done = subprocess.run(
            ["bash", str(repo_root / "install" / "quickstart.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "уже работает (pid 4242)" in done.stderr and str(state / "server.log") in done.stderr
    assert (state / "server.log").read_text() == "the running one's log\n"


def test_a_busy_port_is_named_with_the_fix(repo_root, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(
            os.environ,
            KALKAN_DEMO_STATE=str(tmp_path / "demo"),
            KALKAN_DEMO_PORT=str(port),
            LANG="ky_KG.UTF-8",
            KALKAN_SERVER_CONFIG=str(tmp_path / "server.toml"),
            KALKAN_BIN_DIR=str(tmp_path / "bin"),
        )
        done = subprocess.run(
            ["bash", str(repo_root / "install" / "quickstart.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"{port} порту бош эмес" in done.stderr and f"KALKAN_DEMO_PORT={port + 1}" in done.stderr
