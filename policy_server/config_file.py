"""The server's one configuration file, so that `kalkan-server …` finds its state without
`--state-dir` (issue 11).

Where it is read from, the first that exists:

1. `$KALKAN_SERVER_CONFIG` (a path; when set, only this one),
2. `/etc/kalkan/server.toml` (a real installation),
3. `~/.config/kalkan/server.toml` (the quick start run by a person without root).

Its keys (all optional)::

    state_dir = "/var/lib/kalkan-server"
    db_url = "postgresql+psycopg://kalkan@/kalkan"
    host = "0.0.0.0"
    port = 8443
    tls = true

Order of precedence: a command-line option, then an environment variable (KALKAN_STATE_DIR,
KALKAN_DB_URL, …), then this file, then the built-in default.

`check_not_a_stray_database(settings)` refuses to go on when a command would create a fresh,
empty SQLite database while a Kalkan database already exists at another known place (the
configured one, the default ones): it names the existing one and the fix.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policy_server.errors import KalkanError
from policy_server.web.i18n import N_

ENV = "KALKAN_SERVER_CONFIG"
SYSTEM_PATH = Path("/etc/kalkan/server.toml")
KEYS = {"state_dir": str, "db_url": str, "host": str, "port": int, "tls": bool}


class ConfigError(KalkanError):
    """A problem a person fixes; said in their language (the CLI's `--lang`, the locale)."""

    def __init__(self, message_id: str, **params: object) -> None:
        super().__init__(message_id % params if params else message_id, code="config." + message_id[:20],
                         params=params)
        self.message_id = message_id

    def in_language(self, language: str) -> str:
        from policy_server.web.i18n import translate

        try:
            return translate(language, self.message_id, **self.params)
        except (KeyError, TypeError, ValueError):
            return self.message


def user_path() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kalkan" / "server.toml"


def config_path() -> Path | None:
    """The configuration file in force, or None."""
    explicit = os.environ.get(ENV)
    if explicit:
        return Path(explicit)
    for candidate in (SYSTEM_PATH, user_path()):
        if candidate.is_file():
            return candidate
    return None


def load(path: Path | None = None) -> dict[str, Any]:
    """The file's settings (only the known keys, type-checked); {} when there is no file."""
    path = path if path is not None else config_path()
    if path is None:
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(N_("The configuration file %(path)s (from KALKAN_SERVER_CONFIG) does not exist. "
                             "Create it or unset KALKAN_SERVER_CONFIG."), path=str(path)) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(N_("The configuration file %(path)s cannot be read: %(problem)s. Fix the file "
                             "(TOML, e.g. state_dir = \"/var/lib/kalkan-server\")."),
                          path=str(path), problem=str(exc)) from None
    values: dict[str, Any] = {}
    for key, kind in KEYS.items():
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(N_("In %(path)s, %(key)s must be a %(kind)s, not %(value)s."),
                              path=str(path), key=key, kind=kind.__name__, value=repr(value))
        values[key] = value
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(N_("In %(path)s, unknown setting %(keys)s. Known settings: %(known)s."),
                          path=str(path), keys=", ".join(unknown), known=", ".join(KEYS))
    if "state_dir" in values:
        values["state_dir"] = Path(values["state_dir"]).expanduser()
    return values


def _has_database(state_dir: Path) -> bool:
    db = state_dir / "kalkan.sqlite"
    try:
        return db.is_file() and db.stat().st_size > 0
    except OSError:
        return False


def known_state_dirs() -> list[Path]:
    """Where a Kalkan server keeps its state on this machine (configured, default, demo)."""
    dirs: list[Path] = []
    try:
        configured = load().get("state_dir")
    except ConfigError:
        configured = None
    for candidate in (configured, os.environ.get("KALKAN_STATE_DIR"), Path("/var/lib/kalkan-server"),
                      Path.home() / ".local" / "share" / "kalkan-server"):
        if candidate and Path(candidate) not in dirs:
            dirs.append(Path(candidate))
    return dirs


def check_not_a_stray_database(settings: Mapping[str, Any] | Any) -> None:
    """Refuse to create an empty SQLite database when another Kalkan database exists."""
    if getattr(settings, "db_url", None) or getattr(settings, "named_explicitly", False):
        return  # a database or a folder the person named: used as it is
    state_dir = Path(settings.state_dir)
    if _has_database(state_dir):
        return
    others = [d for d in known_state_dirs() if d.resolve() != state_dir.resolve() and _has_database(d)]
    if others:
        raise ConfigError(N_("There is no Kalkan database in %(here)s, but there is one in %(there)s. "
                             "This command would start an empty one. Use --state-dir %(there)s (or set "
                             "state_dir in %(config)s); to really start a new school here, run "
                             "kalkan-server migrate --state-dir %(here)s first."),
                          here=str(state_dir), there=str(others[0]),
                          config=str(config_path() or SYSTEM_PATH))
