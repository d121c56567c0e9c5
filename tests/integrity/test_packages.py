"""Package-managed changes against a real dpkg database (dpkg --root into tmp)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.integrity.config import IntegrityConfig
from agent.integrity.engine import IntegrityEngine
from agent.integrity.packages import DpkgDatabase, inventory_diff

pytestmark = pytest.mark.root


def build_deb(work: Path, version: str, files: dict[str, bytes]) -> Path:
    pkg = work / f"pkg-{version}"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        f"Package: kalkan-test\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Kalkan <kalkan@example.org>\nDescription: test\n"
    )
    for rel, body in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(body)
        os.chmod(pkg / rel, 0o755)
    deb = work / f"kalkan-test_{version}.deb"
    subprocess.run(
        ["dpkg-deb", "-b", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True
    )
    return deb


def dpkg_install(root: Path, deb: Path) -> None:
    subprocess.run(
        [
            "dpkg",
            f"--root={root}",
            f"--admindir={root}/var/lib/dpkg",
            "--force-script-chrootless",
            "--log=/dev/null",
            "-i",
            str(deb),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def dpkg_root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (dpkg --root); CI runs as root")
    root = tmp_path / "root"
    for sub in ("info", "updates", "triggers"):
        (root / "var/lib/dpkg" / sub).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    return root


def test_package_updates_are_told_from_manual_changes(dpkg_root, tmp_path, sink):
    v1 = build_deb(
        tmp_path,
        "1.0",
        {"opt/kt/tool": b"tool v1", "opt/kt/helper": b"helper v1", "opt/kt/old": b"dropped in 2.0"},
    )
    dpkg_install(dpkg_root, v1)
    app = dpkg_root / "opt/kt"
    (app / "local-script").write_bytes(b"#!/bin/sh\n")  # not from any package
    dpkg = DpkgDatabase(dpkg_root / "var/lib/dpkg", root=dpkg_root)
    engine = IntegrityEngine(
        IntegrityConfig(paths=(str(app),)),
        state_dir=tmp_path / "state",
        key_dir=tmp_path / "key",
        emit=sink,
        dpkg=dpkg,
        workers=1,
    )
    engine.build_baseline()
    assert dpkg.owner(str(app / "tool")) == "kalkan-test"

    v2 = build_deb(
        tmp_path,
        "2.0",
        {"opt/kt/tool": b"tool v2", "opt/kt/helper": b"helper v1", "opt/kt/extra": b"new in 2.0"},
    )
    dpkg_install(dpkg_root, v2)  # the package manager: tool modified, old removed, extra added
    (app / "helper").write_bytes(b"helper patched by hand")  # a package file changed by someone
    (app / "local-script").unlink()  # a non-package file deleted
    result = engine.check()
    got = {
        c.path: (c.change, result.explained[c.path].by_package_manager, result.explained[c.path].package)
        for c in result.changes
    }
    assert got == {
        str(app / "tool"): ("modified", True, "kalkan-test"),
        str(app / "old"): ("removed", True, "kalkan-test"),
        str(app / "extra"): ("added", True, "kalkan-test"),
        str(app / "helper"): ("modified", False, "kalkan-test"),
        str(app / "local-script"): ("removed", False, None),
    }
    assert sink.of("software.changed")[-1]["upgraded"] == ["kalkan-test 1.0 -> 2.0"]
    # Package updates moved the baseline; the manual changes stay pending.
    after = engine.check()
    assert sorted(c.path for c in after.changes) == [str(app / "helper"), str(app / "local-script")]
    assert sink.of("integrity.baseline")[-1]["reason"] == "package_update"


def test_inventory_diff_reads_like_a_changelog():
    assert inventory_diff({"a": "1", "b": "1"}, {"b": "2", "c": "1"}) == (["c 1"], ["a 1"], ["b 1 -> 2"])
