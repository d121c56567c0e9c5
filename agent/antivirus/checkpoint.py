"""The full scan's files in the collector's state folder, always written atomically.

    fullscan-checkpoint.json  a running (or interrupted) full scan: where it is, what it found
    last-full-scan.json       the last completed full scan (the scheduler reads it)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

CHECKPOINT = "fullscan-checkpoint.json"
LAST_COMPLETED = "last-full-scan.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(payload, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # a damaged file must not stop the weekly scan: treat it as absent (the scan restarts)
        return None


@dataclass
class Checkpoint:
    scan_id: str
    started_at: str  # ISO UTC
    roots: list[str]
    exclude: list[str]
    catch_up: bool = False
    files: int = 0
    bytes: int = 0
    threats: int = 0
    errors: int = 0
    elapsed_s: float = 0.0  # scanning time before the current run
    done_through: list[Any] | None = None  # [root index, [path components]]
    interruptions: int = 0
    signature_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at)

    def position(self):
        if not self.done_through:
            return None
        index, parts = self.done_through
        return int(index), tuple(parts)

    def save(self, folder: Path) -> None:
        write_json_atomic(folder / CHECKPOINT, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> Checkpoint | None:
        payload = read_json(folder / CHECKPOINT)
        if not payload:
            return None
        try:
            return cls(**payload)
        except TypeError:
            return None

    @staticmethod
    def clear(folder: Path) -> None:
        (folder / CHECKPOINT).unlink(missing_ok=True)


def load_last_completed(folder: Path) -> dict[str, Any] | None:
    return read_json(folder / LAST_COMPLETED)


def last_completed_at(folder: Path) -> datetime | None:
    payload = load_last_completed(folder)
    try:
        return datetime.fromisoformat(payload["completed_at"]) if payload else None
    except (KeyError, ValueError):
        return None
