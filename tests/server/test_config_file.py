"""One configuration file (/etc/kalkan/server.toml, or KALKAN_SERVER_CONFIG) so that commands
find the state without --state-dir, and a clear error instead of a quiet empty database."""

from __future__ import annotations

import pytest

from policy_server import cli, config_file
from policy_server.settings import Settings


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KALKAN_STATE_DIR", raising=False)
    monkeypatch.delenv("KALKAN_DB_URL", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_commands_find_the_state_through_the_configuration_file(tmp_path, home, monkeypatch, capsys):
    state = tmp_path / "school-state"
    config = tmp_path / "server.toml"
    config.write_text(f'state_dir = "{state}"\nport = 9443\n')
    monkeypatch.setenv("KALKAN_SERVER_CONFIG", str(config))
    settings = Settings.from_env()
    assert settings.state_dir == state and settings.port == 9443
    assert cli.main(["migrate"]) == 0
    assert (state / "kalkan.sqlite").is_file()
    assert cli.main(["enrollment-code", "--json"]) == 0
    assert '"code"' in capsys.readouterr().out
    # the environment and the command line still win over the file
    monkeypatch.setenv("KALKAN_PORT", "7443")
    assert Settings.from_env().port == 7443


def test_a_bad_configuration_file_is_named_with_the_fix(tmp_path, home, monkeypatch, capsys):
    config = tmp_path / "server.toml"
    config.write_text("state_dir = 5\n")
    monkeypatch.setenv("KALKAN_SERVER_CONFIG", str(config))
    assert cli.main(["--lang", "ru", "enrollment-code"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "state_dir" in err and "str" in err
    config.write_text("stat_dir = '/x'\n")
    assert cli.main(["enrollment-code"]) == 2
    assert "unknown setting stat_dir" in capsys.readouterr().err


def test_an_empty_database_next_to_the_real_one_is_refused(tmp_path, home, monkeypatch, capsys):
    real = home / ".local" / "share" / "kalkan-server"
    assert cli.main(["migrate", "--state-dir", str(real)]) == 0  # the school's real database
    empty = tmp_path / "elsewhere"
    config = tmp_path / "server.toml"
    config.write_text(f'state_dir = "{empty}"\n')
    monkeypatch.setenv("KALKAN_SERVER_CONFIG", str(config))
    capsys.readouterr()
    assert cli.main(["--lang", "en", "enrollment-code"]) == 2
    err = capsys.readouterr().err
    assert f"There is no Kalkan database in {empty}" in err and "--state-dir" in err
    assert not (empty / "kalkan.sqlite").exists()  # nothing was created
    assert cli.main(["--lang", "ky", "enrollment-code"]) == 2
    assert "--state-dir" in capsys.readouterr().err
    # naming the folder on purpose is obeyed
    assert cli.main(["enrollment-code", "--state-dir", str(real)]) == 0


def test_config_path_order(tmp_path, home, monkeypatch):
    monkeypatch.delenv("KALKAN_SERVER_CONFIG", raising=False)
    user = home / ".config" / "kalkan" / "server.toml"
    user.parent.mkdir(parents=True)
    user.write_text('port = 1\n')
    found = config_file.config_path()
    assert found in (config_file.SYSTEM_PATH, user)
