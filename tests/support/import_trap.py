"""Which process imported which package: an import trap for real subprocesses.

    from tests.support.import_trap import import_trap, importers

    def test_it(tmp_path, monkeypatch):
        record = import_trap(tmp_path, monkeypatch, ["cryptography", "h2"])
        ...start real processes (they inherit PYTHONPATH and the record's path)...
        assert agent_pid not in importers(record, "cryptography")

`import_trap` puts a `sitecustomize.py` first on PYTHONPATH; every Python process started
afterwards (and its children) appends "<pid> <package>" to the record whenever it imports one
of the named packages or their submodules.  Nothing else changes in those processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_SITECUSTOMIZE = '''
import os, sys

class _KalkanImportTrap:
    names = tuple(n for n in os.environ.get("KALKAN_IMPORT_TRAP_NAMES", "").split(",") if n)

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.names:
            fd = os.open(os.environ["KALKAN_IMPORT_TRAP"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, f"{os.getpid()} {top}\\n".encode())
            os.close(fd)
        return None

if os.environ.get("KALKAN_IMPORT_TRAP"):
    sys.meta_path.insert(0, _KalkanImportTrap())
'''


def import_trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> Path:
    """Record imports of `names` in every Python process started from now on; returns the record."""
    trap_dir = tmp_path / "import-trap"
    trap_dir.mkdir(exist_ok=True)
    (trap_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    record = tmp_path / "imports.log"
    path = os.pathsep.join(filter(None, [str(trap_dir), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("KALKAN_IMPORT_TRAP", str(record))
    monkeypatch.setenv("KALKAN_IMPORT_TRAP_NAMES", ",".join(names))
    return record


def importers(record: Path, name: str) -> set[int]:
    """The pids of the processes that imported `name` (a top-level package)."""
    if not record.exists():
        return set()
    found = set()
    for line in record.read_text().splitlines():
        pid, _, top = line.partition(" ")
        if top == name:
            found.add(int(pid))
    return found
