"""Make a small UT1-format tarball from a UT1 folder: the first N lines of each category
the UT1 → Kalkan map knows (aliases kept as one-line alias files, as in ../shared/data/ut1).

    python benchmarks/filtering/make_lists.py ../shared/data/ut1 OUT.tar.gz --domains 300 --urls 40

Used to make policy_server/filtering/data/starter-ut1.tar.gz (the demo's lists) and
tests/fixtures/ut1/ut1-small.tar.gz (the tests' lists).  `--extra CAT=domain` adds an entry
(the shared copy lacks adult/domains, so the starter names a few well-known adult sites).
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from filters.categories import UT1_MAP  # noqa: E402


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("ut1")
    parser.add_argument("out")
    parser.add_argument("--domains", type=int, default=300)
    parser.add_argument("--urls", type=int, default=40)
    parser.add_argument("--extra", action="append", default=[])
    args = parser.parse_args()
    root = Path(args.ut1)
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        cat, _, entry = item.partition("=")
        extra.setdefault(cat, []).append(entry)
    mtime = 1764806400  # fixed: the same input makes the same tarball
    with tarfile.open(args.out, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(UT1_MAP):
            path = root / name
            if path.is_symlink() or (path.is_file() and path.stat().st_size < 256):
                target = path.readlink().name if path.is_symlink() else path.read_text().strip()
                _add(tar, f"blacklists/{name}", (target + "\n").encode(), mtime)
                continue
            if not path.is_dir():
                continue
            for kind, n in (("domains", args.domains), ("urls", args.urls)):
                lines = []
                file = path / kind
                if file.is_file():
                    with open(file, encoding="utf-8", errors="replace") as fh:
                        for line in fh:
                            if len(lines) >= n:
                                break
                            if line.strip() and not line.startswith("#"):
                                lines.append(line.strip())
                if kind == "domains":
                    lines += extra.get(name, [])
                if lines:
                    _add(tar, f"blacklists/{name}/{kind}", ("\n".join(lines) + "\n").encode(), mtime)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes) at {time.strftime('%F %T')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
