"""The policy server's settings: where its state lives, which database, how it listens.

One small dataclass, filled from the command line (`kalkan-server run --db … --port …`)
or from the environment (`KALKAN_STATE_DIR`, `KALKAN_DB_URL`, `KALKAN_HOST`, `KALKAN_PORT`,
`KALKAN_NO_TLS=1`, `KALKAN_CHECKS_INTERVAL_S`, `KALKAN_ISUO_CHECKS_INTERVAL_S`,
`KALKAN_CHECKS_FIRST_DELAY_S`, `KALKAN_BACKUP_DIR`, `KALKAN_BACKUP_INTERVAL_S`,
`KALKAN_BACKUP_KEEP`, `KALKAN_METRICS_TOKEN`: docs/operations.md).
Everything the server writes — the SQLite database, the TLS
certificate and key, the school CA — lives in `state_dir`, so a backup of that one folder
is a backup of the school (PostgreSQL users back up the database as well).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_state_dir() -> Path:
    env = os.environ.get("KALKAN_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/kalkan-server")
    return Path.home() / ".local" / "share" / "kalkan-server"


@dataclass
class Settings:
    state_dir: Path = field(default_factory=default_state_dir)
    # None: an SQLite file `kalkan.sqlite` in the state dir.  Or `postgresql+psycopg://…`.
    db_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8443
    tls: bool = True
    # Apply Alembic migrations when the app is created (the `run` command always does).
    migrate_on_start: bool = True
    login_session_hours: int = 12
    # Login throttling (policy_server/security/throttle.py, `limits` syntax; docs/security.md).
    # The counts live in the database (shared by every process) unless another `limits` storage
    # URI is named; the limits can be set with KALKAN_LOGIN_ACCOUNT_LIMITS / _ADDRESS_LIMITS.
    login_account_limits: str = field(default_factory=lambda: os.environ.get(
        "KALKAN_LOGIN_ACCOUNT_LIMITS", "5/minute;10/10 minutes;20/hour"))
    login_address_limits: str = field(default_factory=lambda: os.environ.get(
        "KALKAN_LOGIN_ADDRESS_LIMITS", "20/minute;100/hour"))
    login_limit_storage: str = field(default_factory=lambda: os.environ.get("KALKAN_LOGIN_LIMIT_STORAGE",
                                                                            "database"))
    public_url: str | None = None  # how agents reach us; only used in messages
    # Periodic checks (policy_server/checks): weekly-scan check and ISUO cross-checks, seconds
    # between rounds (0 = off; `kalkan-server run-checks` still runs them by hand or from cron).
    checks_interval_s: float = 3600
    isuo_checks_interval_s: float = 300
    checks_first_delay_s: float = 60  # the first round after start
    # "school" (default) or "district": the same server, a district console over schools' aggregates
    level: str = "school"
    # The weekly summary job (makes last week's summary once, sends it to the district): seconds
    summaries_interval_s: float = 3600
    # Operations (docs/operations.md): scheduled backups into `backup_dir` (None = off) every
    # `backup_interval_s`, keeping the newest `backup_keep`; a bearer token that may read
    # `/metrics` (a Prometheus scraper; None = only the responsible person's login).
    backup_dir: str | None = None
    backup_interval_s: float = 86400
    # minors' browsing records older than KALKAN_RETENTION_DAYS removed by the server itself
    # this often (db/retention.py; 0 = off: by hand or cron only)
    retention_interval_s: float = 86400
    backup_keep: int = 14
    metrics_token: str | None = None
    # Agent packages served to the seats (GET /install/…); None: `state_dir/packages`.
    seat_package_dir: str | None = None
    # Many schools on one service (policy_server/tenancy): a school's app uses the service's
    # TLS certificate from this folder.  None (a single school, the default): `state_dir/tls`.
    tls_dir: str | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.state_dir / 'kalkan.sqlite'}"

    @property
    def cert_path(self) -> Path:
        return (Path(self.tls_dir) if self.tls_dir else self.state_dir / "tls") / "server.crt"

    @property
    def key_path(self) -> Path:
        return (Path(self.tls_dir) if self.tls_dir else self.state_dir / "tls") / "server.key"

    @property
    def ca_cert_path(self) -> Path:
        return self.state_dir / "ca" / "school-ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.state_dir / "ca" / "school-ca.key"

    def ensure_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Settings from the environment; explicit keyword overrides win (None = not given)."""
        from policy_server import config_file  # /etc/kalkan/server.toml (issue 11)

        configured = config_file.load()
        values: dict = {
            "state_dir": (default_state_dir() if "KALKAN_STATE_DIR" in os.environ
                          or "state_dir" not in configured else configured["state_dir"]),
            "db_url": os.environ.get("KALKAN_DB_URL") or configured.get("db_url"),
            "host": os.environ.get("KALKAN_HOST") or configured.get("host", "127.0.0.1"),
            "port": int(os.environ.get("KALKAN_PORT") or configured.get("port", 8443)),
            "tls": (os.environ.get("KALKAN_NO_TLS", "") not in ("1", "true", "yes")
                    if os.environ.get("KALKAN_NO_TLS") else configured.get("tls", True)),
            "checks_interval_s": float(os.environ.get("KALKAN_CHECKS_INTERVAL_S", "3600")),
            "isuo_checks_interval_s": float(os.environ.get("KALKAN_ISUO_CHECKS_INTERVAL_S", "300")),
            "level": os.environ.get("KALKAN_LEVEL", "school"),
            "summaries_interval_s": float(os.environ.get("KALKAN_SUMMARIES_INTERVAL_S", "3600")),
            "checks_first_delay_s": float(os.environ.get("KALKAN_CHECKS_FIRST_DELAY_S", "60")),
            "backup_dir": os.environ.get("KALKAN_BACKUP_DIR") or None,
            "backup_interval_s": float(os.environ.get("KALKAN_BACKUP_INTERVAL_S", "86400")),
            "retention_interval_s": float(os.environ.get("KALKAN_RETENTION_INTERVAL_S", "86400")),
            "backup_keep": int(os.environ.get("KALKAN_BACKUP_KEEP", "14")),
            "metrics_token": os.environ.get("KALKAN_METRICS_TOKEN") or None,
            "seat_package_dir": os.environ.get("KALKAN_SEAT_PACKAGE_DIR") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
