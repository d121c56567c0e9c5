"""The version an agent reports (agent/version.py): the Debian package's, as dpkg recorded it,
when it runs from the package; the source's otherwise.  The installed package itself is checked
in tests/deploy/test_debs.py (`kalkan-agent --version` after an upgrade)."""

from __future__ import annotations

from agent import __version__ as SOURCE_VERSION
from agent.version import installed_version, package_version

STATUS = """Package: kalkan-agent-tools
Status: install ok installed
Version: 9.9

Package: kalkan-agent
Status: install ok installed
Priority: optional
Description: Kalkan workstation agent
 Version: 7.7 (a continuation line, not the field)
Version: 0.1.0+school2

Package: zlib1g
Status: install ok installed
Version: 1:1.2.13
"""


def test_the_installed_package_version_is_read_from_dpkgs_record():
    assert package_version(STATUS.splitlines(keepends=True)) == "0.1.0+school2"
    removed = STATUS.replace("install ok installed\nPriority", "deinstall ok config-files\nPriority")
    assert package_version(removed.splitlines()) is None  # removed, only its configuration left
    assert package_version([]) is None


def test_an_agent_run_from_the_package_reports_the_package_version(tmp_path):
    prefix = tmp_path / "opt/kalkan"
    code = prefix / "venv/lib/python3.11/site-packages/agent/version.py"
    status = tmp_path / "status"
    status.write_text(STATUS)
    assert installed_version(code=code, prefix=prefix, status=status) == "0.1.0+school2"
    assert installed_version(code=code, prefix=prefix, status=tmp_path / "none") == SOURCE_VERSION
    elsewhere = tmp_path / "checkout/agent/version.py"  # a checkout: the source's version
    assert installed_version(code=elsewhere, prefix=prefix, status=status) == SOURCE_VERSION
