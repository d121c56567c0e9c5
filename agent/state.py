"""The agent's state directory: the one place that names every file in it.

Layout (default `/var/lib/kalkan-agent`, overridden by `KALKAN_AGENT_STATE` or
`--state-dir`):

    config.json    server URL, agent id, pinned server certificate SHA-256 (and the next one the
                   server announced during a certificate rotation), seat, room
    token          the bearer token from enrolment (mode 0600: only root reads it)
    server.pem     the server certificate fetched and pinned at enrolment (for people to inspect)
    outbox.sqlite  the durable event outbox (agent.outbox), plus its -wal/-shm files
    policy.json    the last good policy bundle, replaced atomically on every applied bundle
    status.json    what the running agent last knew (rewritten every few seconds)
    collectors/    one folder per collector for its own files (`StatePaths.collector_dir`)

Other processes read these: the filtering proxy loads `policy.json` and watches its
mtime (every write is tmp + fsync + rename, so a reader sees the old or the new
file, never half of one), and `kalkan-agent status` reads `status.json`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.tls import PinSet
from policy_server.protocol import PolicyBundle

DEFAULT_STATE_DIR = Path("/var/lib/kalkan-agent")
STATE_DIR_ENV = "KALKAN_AGENT_STATE"


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


class NotEnrolled(RuntimeError):
    """The state dir has no enrolment yet."""


@dataclass(frozen=True)
class StatePaths:
    """Every path of the state dir, named once."""

    root: Path

    @classmethod
    def from_option(cls, state_dir: str | Path | None) -> StatePaths:
        return cls(Path(state_dir) if state_dir else default_state_dir())

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox.sqlite"

    @property
    def policy(self) -> Path:
        return self.root / "policy.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    def collector_dir(self, name: str) -> Path:
        """A collector's own folder (created on demand)."""
        path = self.root / "collectors" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ensure(self) -> StatePaths:
        """Create the state dir.  0755: the proxy (another user) must reach the outbox and
        policy; the secret (token) is protected by its own mode."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self


@dataclass
class AgentConfig:
    """`config.json`: written at enrolment, read at every start."""

    server_url: str
    agent_id: str
    server_sha256: str | None  # pinned certificate fingerprint (hex); None only for http:// servers
    seat: str | None = None
    room: str | None = None
    school: str = ""
    enrolled_at: str = ""
    heartbeat_s: float = 60.0
    collectors: list[str] | None = None  # None: every registered collector
    extra: dict[str, Any] = field(default_factory=dict)
    # The server's next certificate, announced over the pinned channel (agent/tls.py PinSet):
    # accepted beside `server_sha256` until the server switches to it, then it replaces it.
    server_sha256_next: str | None = None

    def pin_set(self, on_change: Callable[[PinSet], None] | None = None) -> PinSet | None:
        """The fingerprints to accept (None for an http:// server: nothing is pinned)."""
        if not self.server_sha256:
            return None
        return PinSet(self.server_sha256, self.server_sha256_next, on_change=on_change)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: Path | str = "config.json") -> AgentConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source} is not valid JSON ({exc}); fix it or enrol again") from None
        known = {f.name for f in fields(cls)}
        missing = {"server_url", "agent_id"} - raw.keys()
        if missing:
            raise ValueError(f"{source} lacks {', '.join(sorted(missing))}; enrol again with "
                             "`kalkan-agent enroll --server URL --code CODE`")
        raw.setdefault("server_sha256", None)
        return cls(**{k: v for k, v in raw.items() if k in known})


def atomic_write(path: Path, data: str | bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write a whole file so readers see the old or the new content, never a mix:
    a temp file in the same folder, fsync, chmod, rename over, fsync the folder.
    `durable=False` skips the fsyncs (for files rewritten every few seconds anyway)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AgentState:
    """Reading and writing the state dir's files (thin, no policy decisions)."""

    def __init__(self, paths: StatePaths | Path | str | None = None) -> None:
        self.paths = paths if isinstance(paths, StatePaths) else StatePaths.from_option(paths)

    # --- enrolment
    def is_enrolled(self) -> bool:
        return self.paths.config.is_file() and self.paths.token.is_file()

    def load_config(self) -> AgentConfig:
        if not self.paths.config.is_file():
            raise NotEnrolled(f"this workstation is not enrolled (no {self.paths.config}); run "
                              "`kalkan-agent enroll --server URL --code CODE` first")
        return AgentConfig.from_json(self.paths.config.read_text(), source=self.paths.config)

    def save_config(self, config: AgentConfig) -> None:
        self.paths.ensure()
        atomic_write(self.paths.config, config.to_json() + "\n", mode=0o644)

    def read_token(self) -> str:
        try:
            token = self.paths.token.read_text().strip()
        except FileNotFoundError:
            raise NotEnrolled(f"no agent token at {self.paths.token}; enrol again") from None
        if not token:
            raise NotEnrolled(f"the agent token file {self.paths.token} is empty; enrol again")
        return token

    def write_token(self, token: str) -> None:
        self.paths.ensure()
        atomic_write(self.paths.token, token.strip() + "\n", mode=0o600)

    def write_server_cert(self, pem: str) -> None:
        atomic_write(self.paths.server_cert, pem, mode=0o644)

    # --- policy
    def load_policy(self) -> PolicyBundle | None:
        """The last good bundle, or None if there is none yet (or it is unreadable)."""
        try:
            return PolicyBundle.model_validate_json(self.paths.policy.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            return None

    def load_policy_json(self) -> dict[str, Any] | None:
        """The last good bundle as the raw JSON dict (what other processes read)."""
        try:
            return json.loads(self.paths.policy.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def save_policy(self, bundle: PolicyBundle, raw: dict[str, Any] | None = None) -> None:
        """Replace `policy.json` atomically.  `raw` (the server's JSON as received) is written
        as is when given, so its content hash still checks out for any reader."""
        body = raw if raw is not None else bundle.model_dump(mode="json")
        atomic_write(self.paths.policy, json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n")

    # --- status
    def write_status(self, status: dict[str, Any]) -> None:
        atomic_write(self.paths.status, json.dumps(status, indent=1, sort_keys=True, default=str) + "\n",
                     durable=False)

    def read_status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.paths.status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
