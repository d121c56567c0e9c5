"""The agent is long-lived: dpkg's file lists must not stay in its memory (goal: agent ≤ 50 MB).

A synthetic dpkg database with 60 000 listed paths (the size of a small desktop's) and a
program tree of which some files belong to a package.  The owners must still be found,
and after the baseline and a check the engine must hold nothing of the lists: traced
Python memory may not grow by more than a small fraction of what the index weighs.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from agent.integrity.config import IntegrityConfig
from agent.integrity.engine import IntegrityEngine
from agent.integrity.packages import DpkgDatabase


def fake_dpkg(admindir: Path, tree: Path, packages: int = 30, per_package: int = 2000) -> None:
    info = admindir / "info"
    info.mkdir(parents=True)
    (admindir / "status").write_text("")
    for n in range(packages):
        lines = [f"/usr/share/pkg{n}/some/deep/folder/file-{i:05d}.data" for i in range(per_package)]
        if n == 7:  # the package that ships the tree's "tool"
            lines += [str(tree), str(tree / "tool")]
        (info / f"pkg{n}.list").write_text("/.\n" + "\n".join(lines) + "\n")


def test_owners_found_and_the_lists_not_kept(tmp_path: Path, sink) -> None:
    tree = tmp_path / "opt"
    tree.mkdir()
    (tree / "tool").write_bytes(b"\x7fELF tool")
    for i in range(200):
        (tree / f"data-{i}").write_bytes(b"x" * i)
    fake_dpkg(tmp_path / "dpkg", tree)
    dpkg = DpkgDatabase(tmp_path / "dpkg")
    assert dpkg.owner(str(tree / "tool")) == "pkg7"  # one path: the substring search
    assert dpkg.owners_of([str(tree / "tool"), *(str(tree / f"data-{i}") for i in range(40))]) == {
        str(tree / "tool"): ["pkg7"]
    }  # many paths: the line split
    engine = IntegrityEngine(
        IntegrityConfig(paths=(str(tree),)),
        state_dir=tmp_path / "state",
        key_dir=tmp_path / "key",
        emit=sink,
        dpkg=dpkg,
        workers=1,
    )

    # What the old whole-database index weighed, for scale.
    gc.collect()
    tracemalloc.start()
    whole = {}
    for list_file in (tmp_path / "dpkg/info").glob("*.list"):
        for line in list_file.read_bytes().splitlines():
            whole.setdefault(line.decode(), []).append(list_file.stem)
    index_bytes = tracemalloc.get_traced_memory()[0]
    del whole
    gc.collect()

    before = tracemalloc.get_traced_memory()[0]
    engine.build_baseline()
    (tree / "tool").write_bytes(b"\x7fELF patched by hand")
    result = engine.check()
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    assert engine.store.lookup(str(tree / "tool")).package == "pkg7"
    assert engine.store.lookup(str(tree / "data-3")).package is None
    assert [(c.path, c.change) for c in result.changes] == [(str(tree / "tool"), "modified")]
    assert result.explained[str(tree / "tool")].package == "pkg7"
    assert not result.explained[str(tree / "tool")].by_package_manager  # no md5sums: not dpkg's doing
    assert index_bytes > 5_000_000, index_bytes  # the test database is big enough to show a leak
    assert kept < index_bytes / 10, (kept, index_bytes)


def _peak_while(call) -> int:
    """The traced Python memory peak (bytes, over what was held before) while `call` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_dpkg_files_are_never_read_whole(tmp_path: Path) -> None:
    """The lookups' peak stays far below the size of the big files they read: a file read
    whole, even for a moment, fragments the long-lived agent's heap (issue 2: ≤ 50 MB)."""
    admindir = tmp_path / "dpkg"
    info = admindir / "info"
    info.mkdir(parents=True)
    big_list = "/.\n" + "".join(f"/usr/lib/big/module-{i:06d}/__init__.py\n" for i in range(80_000))
    (info / "big.list").write_text(big_list)
    (info / "small.list").write_text("/.\n/usr/bin/small-tool")  # the last line without its newline
    stanza = "Package: {n}\nStatus: install ok installed\nVersion: 1.{n}\nDescription: x\n{d}\n\n"
    status = "".join(stanza.format(n=f"pkg{i}", d=" long text line\n" * 40) for i in range(2_000))
    (admindir / "status").write_text(status)
    assert len(big_list) > 3_000_000 and len(status) > 1_000_000
    dpkg = DpkgDatabase(admindir)

    wanted_few = ["/usr/lib/big/module-000007/__init__.py", "/usr/bin/small-tool", "/not/listed"]
    wanted_many = [*wanted_few, *(f"/usr/lib/other/{i}" for i in range(100))]
    answers = {}
    peaks = {
        "few": _peak_while(lambda: answers.setdefault("few", dpkg.owners_of(wanted_few))),
        "many": _peak_while(lambda: answers.setdefault("many", dpkg.owners_of(wanted_many))),
        "status": _peak_while(lambda: answers.setdefault("status", dpkg.installed())),
    }

    expected = {"/usr/lib/big/module-000007/__init__.py": ["big"], "/usr/bin/small-tool": ["small"]}
    assert answers["few"] == expected  # the memory-mapped search, first and last lines included
    assert answers["many"] == expected  # the line-by-line read
    assert len(answers["status"]) == 2_000 and answers["status"]["pkg1999"] == "1.pkg1999"
    assert peaks["few"] < 100_000, peaks
    assert peaks["many"] < 100_000, peaks
    assert peaks["status"] < 400_000, peaks  # the answer itself (2 000 names and versions) is most of it
