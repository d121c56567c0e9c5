"""Artifacts the agent fetches from its server besides the policy: the category index, and
the status of the reports sent from this seat.

**Category index.**  The policy names the index in force by the SHA-256 of its file
(`filtering.index_sha256`).  When a bundle names one this seat does not have, the fetcher
downloads `GET /api/v1/filtering/index/<sha256>` over the pinned channel (streamed to a
temporary file, hashed as it arrives), checks the hash and the index's own body hash
(`CategoryIndex.open(verify=True)`), then renames it to `<state>/indexes/<sha256>.kidx` and
points `<state>/indexes/current` at it (written atomically).  The proxy watches that pointer
and swaps the index without a restart.  A download that fails or does not match is thrown
away: the last good index stays in force, and the seat's health says so (retried every
`retry_s`).  The index in force and the one before are kept; older files are removed.

**Report status.**  The student's report page (`http://report.kalkan/`) shows what became of
the reports sent from this seat (received / blocked / allowed / rejected).  The proxy has no
token, so the agent asks `GET /api/v1/filtering/reports` for it — at once when the server's
push channel says reports from this seat were decided (``event: reports``, sent to those seats
only), 0.5–2.5 s after every applied policy (spread so the seats' policy fetches go first), and
every `reports_poll_s` (the fallback when the push channel is down) — and writes
`<state>/report-status.json`, which the proxy reads when it serves the page.  The server
sends no URLs (an agent never receives students' URLs, 002 §3.1): each status carries the
SHA-256 of the canonical URL, and the proxy shows the statuses of the reports it sent itself
(it remembers their URLs, in memory, until it restarts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from agent.server_client import ServerClient, TransportError, error_detail
from agent.state import atomic_write
from policy_server.protocol import CollectorHealth, CollectorState, PolicyBundle

log = logging.getLogger("kalkan.agent.artifacts")

INDEX_DIR = "indexes"
CURRENT = "current"
REPORTS_FILE = "report-status.json"
INDEX_PATH = "/api/v1/filtering/index/"
REPORTS_PATH = "/api/v1/filtering/reports"
CHUNK = 1 << 20
REPORTS_AFTER_POLICY_S = (0.5, 2.5)


class ArtifactError(RuntimeError):
    pass


def index_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / INDEX_DIR


def index_file(state_dir: Path | str, sha256: str) -> Path:
    return index_dir(state_dir) / f"{sha256}.kidx"


def current_sha(state_dir: Path | str) -> str | None:
    try:
        sha = (index_dir(state_dir) / CURRENT).read_text().strip()
    except OSError:
        return None
    return sha if len(sha) == 64 else None


def current_index(state_dir: Path | str, wanted: str | None = None) -> Path | None:
    """The index file to use: the one the policy names if it is here, else the last good one."""
    for sha in (wanted, current_sha(state_dir)):
        if sha:
            path = index_file(state_dir, sha)
            if path.is_file():
                return path
    return None


def report_key(url: str) -> str:
    """The key the server gives a report's status by: SHA-256 of the canonical URL (the server
    never sends students' URLs to a seat; policy_server.filtering.queue.url_key)."""
    from filters.canonical import canonicalize

    try:
        canonical = canonicalize((url or "").strip()[:4096])
    except (ValueError, TypeError):
        canonical = (url or "").strip()[:4096]
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_report_status(state_dir: Path | str) -> list[dict[str, Any]]:
    try:
        data = json.loads((Path(state_dir) / REPORTS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return data.get("reports", []) if isinstance(data, dict) else []


class ArtifactFetcher:
    def __init__(self, state_dir: Path | str, client: ServerClient, *, retry_s: float = 30.0,
                 reports_poll_s: float = 30.0) -> None:
        self.state_dir = Path(state_dir)
        self.client = client
        self.retry_s = retry_s
        self.reports_poll_s = reports_poll_s
        self.wanted: str | None = None
        self.last_error: str | None = None
        self.error_since: float | None = None
        self.fetched_at: float | None = None
        self.last_fetch_s: float | None = None
        self.reports_error: str | None = None
        self._wake = threading.Event()
        self._reports_at = 0.0  # monotonic time of the next status read (0: at once)
        self._reports_asked = False  # the server said "read it now" (reports_now)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ inputs

    def on_policy(self, bundle: PolicyBundle) -> None:
        self.wanted = bundle.filtering.index_sha256
        # The report status is asked a moment later, spread over the seats: a decision reaches
        # every seat at once, and their policy fetches should not queue behind 30 status reads.
        self._reports_at = min(self._reports_at, time.monotonic() + random.uniform(*REPORTS_AFTER_POLICY_S))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def reports_now(self) -> None:
        """The server says reports sent from this seat were decided: read their status now."""
        self._reports_asked = True
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        next_index = 0.0
        while not stop.is_set():
            now = time.monotonic()
            index_needed = bool(self.wanted and self.wanted != current_sha(self.state_dir))
            if index_needed and now >= next_index:
                if not self.ensure_index(self.wanted):
                    next_index = time.monotonic() + self.retry_s
            if now >= self._reports_at or self._reports_asked:
                self._reports_asked = False  # asked again during the read: read again next turn
                self.refresh_reports()
                self._reports_at = time.monotonic() + self.reports_poll_s
            due = [self._reports_at]
            if self.wanted and self.wanted != current_sha(self.state_dir):
                due.append(next_index)
            self._wake.wait(timeout=max(0.05, min(due) - time.monotonic()))
            self._wake.clear()

    # ------------------------------------------------------------------ the index

    def ensure_index(self, sha256: str) -> bool:
        """Have `sha256` in force; False (and the last good index kept) if it could not."""
        with self._lock:
            started = time.perf_counter()
            try:
                path = index_file(self.state_dir, sha256)
                if not path.is_file():
                    self._download(sha256, path)
                self._point_at(sha256)
            except (ArtifactError, TransportError, OSError) as exc:
                if self.last_error is None:
                    self.error_since = time.time()
                self.last_error = (f"category index {sha256[:12]}… not fetched: {exc}; keeping "
                                   f"{(current_sha(self.state_dir) or 'none')[:12]}")
                log.warning(self.last_error)
                return False
            self.last_error = self.error_since = None
            self.fetched_at = time.time()
            self.last_fetch_s = time.perf_counter() - started
            self._prune(keep={sha256})
            log.info("category index %s… in force (%.2f s)", sha256[:12], self.last_fetch_s)
            return True

    def _download(self, sha256: str, final: Path) -> None:
        from filters.index import CategoryIndex, IndexError_

        folder = index_dir(self.state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)  # the proxy's own account reads it
        tmp = folder / f".{sha256}.{os.getpid()}.part"
        digest = hashlib.sha256()
        try:
            with self.client.http.stream(INDEX_PATH + sha256, connect_timeout=10.0,
                                         read_timeout=60.0) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise ArtifactError(f"the server answered {resp.status_code}: {error_detail(resp)}")
                with open(tmp, "wb") as fh:
                    while True:
                        try:
                            chunk = resp._raw.read(CHUNK)
                        except OSError as exc:
                            raise TransportError(f"download broke off: {exc}") from exc
                        if not chunk:
                            break
                        digest.update(chunk)
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            if digest.hexdigest() != sha256:
                raise ArtifactError(f"the file's SHA-256 is {digest.hexdigest()[:12]}…, not the one the "
                                    "policy names (damaged on the way)")
            try:
                CategoryIndex.open(tmp, verify=True).close()
            except IndexError_ as exc:
                raise ArtifactError(f"not a usable index: {exc}") from None
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def _point_at(self, sha256: str) -> None:
        if current_sha(self.state_dir) != sha256:
            atomic_write(index_dir(self.state_dir) / CURRENT, sha256 + "\n", mode=0o644)

    def _prune(self, keep: set[str]) -> None:
        """Keep the index in force and the newest other one (the fallback); remove the rest."""
        files = sorted(index_dir(self.state_dir).glob("*.kidx"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
        others = [p for p in files if p.stem not in keep]
        for old in others[1:]:
            old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ report status

    def refresh_reports(self) -> bool:
        try:
            resp = self.client.http.get(REPORTS_PATH, timeout=10.0)
            if resp.status_code != 200:
                raise ArtifactError(f"the server answered {resp.status_code}: {error_detail(resp)}")
            body = resp.json()
            atomic_write(self.state_dir / REPORTS_FILE,
                         json.dumps({"reports": body.get("reports", []), "fetched_at": time.time()},
                                    ensure_ascii=False), mode=0o644, durable=False)
        except (ArtifactError, TransportError, OSError, ValueError) as exc:
            self.reports_error = str(exc)
            return False
        self.reports_error = None
        return True

    # ------------------------------------------------------------------ health

    def health(self) -> CollectorHealth:
        in_force = current_sha(self.state_dir)
        if self.last_error:
            return CollectorHealth(state=CollectorState.degraded, detail=self.last_error)
        if self.wanted and in_force != self.wanted:
            return CollectorHealth(state=CollectorState.degraded,
                                   detail=f"category index {self.wanted[:12]}… not fetched yet")
        detail = f"category index {in_force[:12]}… in force" if in_force else "no category index published"
        return CollectorHealth(state=CollectorState.ok, detail=detail)

    def status(self) -> dict[str, Any]:
        return {"in_force": current_sha(self.state_dir), "wanted": self.wanted, "error": self.last_error,
                "fetched_at": self.fetched_at, "last_fetch_s": self.last_fetch_s,
                "reports_error": self.reports_error}
