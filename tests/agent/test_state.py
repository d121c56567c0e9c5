"""The state dir: paths, token mode, atomic policy writes, config errors."""

from __future__ import annotations

import json
import stat

import pytest

from agent.state import AgentConfig, AgentState, NotEnrolled, StatePaths, atomic_write, default_state_dir
from policy_server.protocol import PolicyBundle


def test_default_state_dir_follows_env(monkeypatch) -> None:
    monkeypatch.delenv("KALKAN_AGENT_STATE", raising=False)
    assert str(default_state_dir()) == "/var/lib/kalkan-agent"
    monkeypatch.setenv("KALKAN_AGENT_STATE", "/tmp/x")
    assert str(StatePaths.from_option(None).root) == "/tmp/x"


def test_token_is_private(state: AgentState) -> None:
    state.write_token("abc\n")
    assert stat.S_IMODE(state.paths.token.stat().st_mode) == 0o600
    assert state.read_token() == "abc"


def test_not_enrolled_is_explained(state: AgentState) -> None:
    assert not state.is_enrolled()
    with pytest.raises(NotEnrolled, match="kalkan-agent enroll"):
        state.load_config()
    with pytest.raises(NotEnrolled):
        state.read_token()


def test_config_round_trip_and_bad_config(state: AgentState) -> None:
    config = AgentConfig(server_url="https://s:8443", agent_id="a1", server_sha256="ab" * 32, seat="s1")
    state.save_config(config)
    assert state.load_config() == config
    state.paths.config.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        state.load_config()
    state.paths.config.write_text(json.dumps({"server_url": "x"}))
    with pytest.raises(ValueError, match="lacks agent_id"):
        state.load_config()


def test_policy_written_atomically_and_read_back(state: AgentState) -> None:
    assert state.load_policy() is None
    bundle = PolicyBundle(version=3, school="S").sealed()
    state.save_policy(bundle)
    assert state.load_policy() == bundle
    inode = state.paths.policy.stat().st_ino
    state.save_policy(PolicyBundle(version=4).sealed())
    assert state.paths.policy.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert state.load_policy_json()["version"] == 4
    leftovers = [p for p in state.paths.root.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_atomic_write_failure_leaves_old_file(tmp_path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, "old")
    with pytest.raises(TypeError):
        atomic_write(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
