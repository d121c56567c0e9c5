"""Category lists as a server artifact: fetch, verify, compile once, publish by hash.

    kalkan-server lists update [--source URL|RSYNC-URL|TARBALL|FOLDER] [--sha256 HEX]

* The source is remembered (table `filter_list_state`); the weekly job and a later
  `lists update` without `--source` use it again.
* HTTP(S): a conditional GET (If-None-Match / If-Modified-Since from the last answer); a
  304 means nothing to do.  The body is checked against Content-Length and, when given,
  `--sha256`; then it must be a readable gzip'd tar of a UT1 tree (a damaged download fails
  here and nothing changes: the last good index stays published).
* rsync (``rsync://host[:port]/module/path``, as the UT1 publisher offers): through the
  `rsync` command (Debian package rsync), into a mirror kept under `<state>/lists/rsync/`, so a
  later update transfers only what changed (rsync checks every file it receives).  A path
  ending in ``.tar.gz``/``.tgz``/``.tar`` is the tarball; anything else is the UT1 tree (the
  folder holding ``adult/domains``, …; ``--delete``, ``--delay-updates``, links outside the
  tree ignored).  Nothing received and the last update good: "not modified".  A failed
  transfer, or a tarball/tree that does not read or compile, publishes nothing.
* A tarball is unpacked with tarfile's "data" filter (no absolute paths, no `..`, no
  links outside); the UT1 root is the folder holding `*/domains`.
* Compiled with `filters.index.compile_index` into `<state>/lists/<sha256>.kidx`, where the
  hash is of the whole file: that is what agents ask for and check.  When the compiled
  body equals the index in force (same lists), nothing is published.
* Published with `amend_policy`: `filtering.index_sha256` in the bundle; agents fetch
  `GET /api/v1/filtering/index/<sha256>` on the push, check the hash and swap the file.
* What changed is recorded per category (entries added / removed against the index before).
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import utcnow
from policy_server.errors import InvalidInput
from policy_server.filtering.models import FilterIndexArtifact, FilterListState
from policy_server.policies.service import amend_policy, current_bundle

HTTP_TIMEOUT_S = 120.0
RSYNC_IO_TIMEOUT_S = 120  # rsync --timeout: no data for this long ends the transfer
RSYNC_TOTAL_TIMEOUT_S = 3600.0
TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")
MAX_DOWNLOAD_BYTES = 1 << 30
MIN_CATEGORIES = 1  # a UT1 tree with no mapped category folder is not a list
STARTER_LISTS = Path(__file__).resolve().parent / "data" / "starter-ut1.tar.gz"
WEEK_S = 7 * 24 * 3600.0


class ListError(InvalidInput):
    """The lists could not be fetched, read or compiled; the message names why and the fix."""


@dataclass
class UpdateResult:
    status: str  # published | unchanged | not_modified
    sha256: str | None = None
    entries: int = 0
    size: int = 0
    seconds: float = 0.0
    changes: dict[str, list[int]] = field(default_factory=dict)
    policy_version: int | None = None
    source: str = ""


def lists_dir(state_dir: Path) -> Path:
    path = Path(state_dir) / "lists"
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_path(state_dir: Path, sha256: str) -> Path:
    return lists_dir(state_dir) / f"{sha256}.kidx"


def valid_sha(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _state(db: Session) -> FilterListState:
    row = db.get(FilterListState, 1)
    if row is None:
        row = FilterListState(id=1, source="")
        db.add(row)
    return row


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ fetching


def _download(url: str, state: FilterListState, into: Path, *, force: bool) -> Path | None:
    """The body at `url` in a file under `into`, or None when the publisher says 304."""
    request = urllib.request.Request(url, headers={"User-Agent": "kalkan-server lists update"})
    if not force and state.source == url:
        if state.etag:
            request.add_header("If-None-Match", state.etag)
        if state.last_modified:
            request.add_header("If-Modified-Since", state.last_modified)
    try:
        response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)  # noqa: S310 - the school's URL
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None
        raise ListError(f"{url} answered {exc.code} {exc.reason}; check the address "
                        "(kalkan-server lists update --source URL)") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ListError(f"could not download {url}: {getattr(exc, 'reason', exc)}; check the network, "
                        "or give a local copy with --source /path/to/blacklists.tar.gz") from None
    target = into / "download.tar.gz"
    expected = response.headers.get("Content-Length")
    written = 0
    with response, open(target, "wb") as fh:
        try:
            while chunk := response.read(1 << 20):
                written += len(chunk)
                if written > MAX_DOWNLOAD_BYTES:
                    raise ListError(f"{url} is larger than {MAX_DOWNLOAD_BYTES >> 20} MB; refused")
                fh.write(chunk)
        except (OSError, ValueError) as exc:
            raise ListError(f"the download of {url} broke off ({exc}); the last good index stays, "
                            "try again later") from None
    if expected is not None and expected.isdigit() and int(expected) != written:
        raise ListError(f"the download of {url} is incomplete ({written} of {expected} bytes); "
                        "the last good index stays, try again later")
    state.etag = response.headers.get("ETag")
    state.last_modified = response.headers.get("Last-Modified")
    return target


def _rsync(url: str, state_dir: Path) -> tuple[Path, bool]:
    """Mirror `url` (a UT1 tarball or tree) under `<state>/lists/rsync/`; returns the local copy
    (the tarball file or the tree folder) and whether anything was received or deleted."""
    binary = shutil.which("rsync")
    if binary is None:
        raise ListError("the rsync command is missing; install the Debian package rsync, or give an "
                        "http(s) address or a local copy with --source")
    parts = urlsplit(url)
    path = PurePosixPath(parts.path)
    if not parts.hostname or len(path.parts) < 2 or ".." in path.parts:
        raise ListError(f"{url} is not an rsync address; write it as rsync://host/module/path "
                        "(for example rsync://ftp.ut-capitole.fr/blacklist/dest/)")
    mirror = lists_dir(state_dir) / "rsync" / hashlib.sha256(url.encode()).hexdigest()[:16]
    mirror.mkdir(parents=True, exist_ok=True)
    if parts.path.endswith(TARBALL_SUFFIXES):
        local, args = mirror / path.name, [url, str(mirror / path.name)]
    else:
        local = mirror / "tree"
        args = ["--recursive", "--delete", "--delay-updates", "--links", "--safe-links",
                url.rstrip("/") + "/", str(local) + "/"]
    cmd = [binary, "--times", "--itemize-changes", f"--timeout={RSYNC_IO_TIMEOUT_S}", "--contimeout=30",
           f"--max-size={MAX_DOWNLOAD_BYTES}", "--no-motd", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RSYNC_TOTAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ListError(f"rsync from {url} took longer than {RSYNC_TOTAL_TIMEOUT_S:.0f} s; the last good "
                        "index stays, try again later") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[0]
        raise ListError(f"rsync from {url} failed ({said}); check the address (rsync://host/module/path) "
                        "and that the server allows rsync (TCP 873) — the last good index stays")
    if not local.exists():
        raise ListError(f"rsync from {url} received nothing; check the path — the last good index stays")
    changed = any(line[:1] in (">", "c", "*") for line in done.stdout.splitlines())
    return local, changed


def _unpack(tarball: Path, into: Path) -> Path:
    target = into / "unpacked"
    target.mkdir()
    try:
        with tarfile.open(tarball, "r:*") as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ListError(f"{tarball.name} is not a readable UT1 tarball ({exc.__class__.__name__}: {exc}); "
                        "it may be damaged or cut short — the last good index stays, download it again") \
            from None
    return target


def ut1_root(folder: Path) -> Path:
    """The folder that holds the category folders (`adult/domains`, …), at most 3 levels down."""
    from filters.categories import UT1_MAP

    candidates = [folder, *sorted(p for p in folder.glob("*") if p.is_dir()),
                  *sorted(p for p in folder.glob("*/*") if p.is_dir())]
    for candidate in candidates:
        found = [name for name in UT1_MAP if (candidate / name / "domains").is_file()
                 or (candidate / name / "urls").is_file()]
        if len(found) >= MIN_CATEGORIES:
            return candidate
    raise ListError(f"no UT1 category folders (adult/domains, games/domains, …) in {folder.name}; "
                    "give the UT1 blacklists tarball or the folder that holds the categories")


# ------------------------------------------------------------------ comparing


def _category_sets(index) -> tuple[list[frozenset[str]], Counter]:
    from filters.index import HAS_PATHS

    per_mask = [frozenset(index.table.ids_of(mask & ~HAS_PATHS)) for mask in index._masks]
    counts: Counter = Counter()
    for mask_index, n in Counter(index._idx).items():
        for cat in per_mask[mask_index]:
            counts[cat] += n
    return per_mask, counts


def compare(new_path: Path, old_path: Path | None) -> tuple[dict[str, int], dict[str, list[int]]]:
    """(entries per category of the new index, category → [added, removed] against the old)."""
    from filters.index import CategoryIndex

    new = CategoryIndex.open(new_path)
    new_cats, counts = _category_sets(new)
    changes: dict[str, list[int]] = {}
    if old_path is None or not old_path.is_file():
        return dict(counts), {c: [n, 0] for c, n in counts.items()}
    old = CategoryIndex.open(old_path)
    old_cats, _ = _category_sets(old)
    added: Counter = Counter()
    removed: Counter = Counter()
    nk, ok_ = new._keys, old._keys
    ni, oi = new._idx, old._idx
    i = j = 0
    n_new, n_old = len(nk), len(ok_)
    empty: frozenset[str] = frozenset()
    while i < n_new or j < n_old:
        a = nk[i] if i < n_new else None
        b = ok_[j] if j < n_old else None
        if b is None or (a is not None and a < b):
            cats_new, cats_old = new_cats[ni[i]], empty
            i += 1
        elif a is None or b < a:
            cats_new, cats_old = empty, old_cats[oi[j]]
            j += 1
        else:
            cats_new, cats_old = new_cats[ni[i]], old_cats[oi[j]]
            i += 1
            j += 1
            if cats_new == cats_old:
                continue
        for c in cats_new - cats_old:
            added[c] += 1
        for c in cats_old - cats_new:
            removed[c] += 1
    for c in set(added) | set(removed):
        changes[c] = [added[c], removed[c]]
    new.close()
    old.close()
    return dict(counts), changes


# ------------------------------------------------------------------ the update


def current_artifact(db: Session) -> FilterIndexArtifact | None:
    sha = current_bundle(db).filtering.index_sha256
    return db.get(FilterIndexArtifact, sha) if sha else None


def update_lists(db: Session, *, state_dir: Path, actor: str, source: str | None = None,
                 sha256: str | None = None, force: bool = False) -> UpdateResult:
    """Fetch, verify, compile and publish the category lists; the caller commits.

    On any failure nothing is published (ListError names why); the error is remembered in
    `filter_list_state.last_error` by `record_failure`."""
    from filters.index import CategoryIndex, IndexError_, Source, compile_index

    state = _state(db)
    source = (source or state.source or "").strip()
    if not source:
        raise ListError("no category list source yet; run kalkan-server lists update --source URL "
                        "(the UT1 blacklists.tar.gz), or a local tarball or folder")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="lists-", dir=lists_dir(state_dir)))
    folder: Path | None = None  # the tree an rsync mirrored
    try:
        if source.startswith(("http://", "https://")):
            tarball = _download(source, state, work, force=force)
            if tarball is None:
                state.source, state.checked_at, state.last_error = source, utcnow(), None
                return UpdateResult(status="not_modified", source=source,
                                    sha256=current_bundle(db).filtering.index_sha256)
        elif source.startswith("rsync://"):
            local, changed = _rsync(source, state_dir)
            if not changed and not force and state.source == source and not state.last_error \
                    and current_bundle(db).filtering.index_sha256:
                state.checked_at = utcnow()
                return UpdateResult(status="not_modified", source=source,
                                    sha256=current_bundle(db).filtering.index_sha256)
            tarball, folder = (local, None) if local.is_file() else (None, local)
        else:
            local = Path(source).expanduser()
            if not local.exists():
                raise ListError(f"{source} does not exist; give the UT1 tarball or folder "
                                "(for example /media/usb/blacklists.tar.gz)")
            source = str(local.resolve())
            tarball = local if local.is_file() else None
            if not force and state.source != source:
                state.etag = state.last_modified = None
        if tarball is not None and sha256:
            actual = file_sha256(tarball)
            if actual != sha256.lower():
                raise ListError(f"the downloaded lists' SHA-256 is {actual}, not the expected {sha256}; "
                                "the file is damaged or not the one published — the last good index stays")
        tree = ut1_root(_unpack(tarball, work) if tarball is not None else folder or Path(source))
        out = work / "index.kidx"
        try:
            stats = compile_index([Source(str(tree), "ut1")], out)
            compiled = CategoryIndex.open(out, verify=True)
        except (OSError, ValueError, IndexError_) as exc:
            raise ListError(f"the lists could not be compiled: {exc}") from None
        body_sha, entries = compiled.sha256, len(compiled)
        compiled.close()
        if entries == 0:
            raise ListError("the lists hold no entries; the last good index stays")
        state.source, state.checked_at, state.last_error = source, utcnow(), None
        previous = current_artifact(db)
        if previous is not None and previous.body_sha256 == body_sha and not force:
            return UpdateResult(status="unchanged", sha256=previous.sha256, entries=previous.entries,
                                size=previous.size, source=source)
        sha = file_sha256(out)
        final = artifact_path(state_dir, sha)
        os.replace(out, final)
        os.chmod(final, 0o644)
        counts, changes = compare(final, artifact_path(state_dir, previous.sha256) if previous else None)
        seconds = round(time.perf_counter() - started, 3)
        if db.get(FilterIndexArtifact, sha) is None:
            db.add(FilterIndexArtifact(
                sha256=sha, body_sha256=body_sha, size=final.stat().st_size, entries=entries,
                created_by=actor, source=source, build_seconds=stats.seconds, counts=counts,
                changes=changes, previous_sha256=previous.sha256 if previous else None))
        added = sum(a for a, _ in changes.values())
        removed = sum(r for _, r in changes.values())

        def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
            bundle.filtering.index_sha256 = sha
            return bundle

        bundle = amend_policy(db, actor=actor,
                              comment=f"category lists updated (000 §8.2): {entries} entries, "
                                                      f"+{added} −{removed}", change=change)
        return UpdateResult(status="published", sha256=sha, entries=entries, size=final.stat().st_size,
                            seconds=seconds, changes=changes, policy_version=bundle.version, source=source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record_failure(db: Session, message: str) -> None:
    state = _state(db)
    state.checked_at = utcnow()
    state.last_error = message[:2000]


def list_state(db: Session) -> FilterListState | None:
    return db.get(FilterListState, 1)


def artifacts(db: Session, limit: int = 20) -> list[FilterIndexArtifact]:
    return list(db.scalars(select(FilterIndexArtifact).order_by(FilterIndexArtifact.created_at.desc())
                           .limit(limit)))


def published_path(db: Session, state_dir: Path, sha256: str) -> Path | None:
    """The file of a published artifact, or None (unknown hash or file gone)."""
    if not valid_sha(sha256) or db.get(FilterIndexArtifact, sha256) is None:
        return None
    path = artifact_path(state_dir, sha256)
    return path if path.is_file() else None


def weekly_job(state_dir: Path):
    """The scheduler job: `lists update` with the remembered source, once a week."""

    def run(db: Session, now: datetime) -> None:
        state = list_state(db)
        if state is None or not state.source:
            return  # never set up: nothing to update
        if state.checked_at is not None and (now - state.checked_at).total_seconds() < WEEK_S - 3600:
            return  # the job runs hourly; the update only once a week
        try:
            update_lists(db, state_dir=state_dir, actor="system:lists")
            db.commit()
        except ListError as exc:
            db.rollback()
            record_failure(db, str(exc))
            db.commit()

    return run


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)
