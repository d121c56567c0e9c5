"""The integrity options, read from the policy bundle and checked where they are loaded (pure)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from policy_server.protocol import IntegritySection


class IntegrityConfigError(ValueError):
    pass


@dataclass(frozen=True)
class IntegrityConfig:
    paths: tuple[str, ...]
    drop_paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    full_rehash_hours: int = 168
    check_interval_minutes: int = 60
    auto_accept_package_updates: bool = True
    # (path, sha256 or None for an accepted removal)
    accepted: tuple[tuple[str, str | None], ...] = field(default=())

    @classmethod
    def from_section(cls, section: IntegritySection) -> IntegrityConfig:
        for name, values in (
            ("integrity.paths", section.paths),
            ("integrity.drop_paths", section.drop_paths),
        ):
            for value in values:
                if not value.startswith("/"):
                    raise IntegrityConfigError(
                        f"{name}: {value!r} is not an absolute path; write it from the root, e.g. '/opt/app'"
                    )
        if section.full_rehash_hours < 1:
            raise IntegrityConfigError(
                f"integrity.full_rehash_hours is {section.full_rehash_hours}; it must be at least 1 "
                "(168 = once a week is the usual value)"
            )
        return cls(
            paths=tuple(os.path.normpath(p) for p in section.paths),
            drop_paths=tuple(section.drop_paths),
            exclude=tuple(section.exclude),
            full_rehash_hours=section.full_rehash_hours,
            check_interval_minutes=section.check_interval_minutes,
            auto_accept_package_updates=section.auto_accept_package_updates,
            accepted=tuple((a.path, a.sha256) for a in section.accepted),
        )

    def drop_folders(self) -> list[str]:
        """The drop places that exist now (globs like /home/*/Downloads expanded)."""
        found = []
        for pattern in self.drop_paths:
            for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                if os.path.isdir(path):
                    found.append(os.path.normpath(path))
        return found


def under(path: str, roots: tuple[str, ...] | list[str]) -> bool:
    """Is `path` one of `roots` or inside one of them?"""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)
