"""The version an agent reports (agent/version.py): the Debian package's, as dpkg recorded it,
when it runs from the package; the source's otherwise.  The installed package itself is checked
in tests/deploy/test_debs.py (`kalkan-agent --version` after an upgrade)."""

from __future__ import annotations

from agent import __version__ as SOURCE_VERSION
from agent.version import installed_version


class Dpkg:
    def __init__(self, version: str) -> None:
        self.version, self.asked = version, 0

    def installed(self) -> str:
        self.asked += 1
        return self.version


def test_an_agent_run_from_the_package_reports_the_package_version(tmp_path):
    prefix = tmp_path / "opt/kalkan"
    code = prefix / "venv/lib/python3.11/site-packages/agent/version.py"
    assert installed_version(code=code, prefix=prefix, packages=Dpkg("0.1.0+school2")) == "0.1.0+school2"
    assert installed_version(code=code, prefix=prefix, packages=Dpkg("")) == SOURCE_VERSION  # not installed
    elsewhere, dpkg = tmp_path / "checkout/agent/version.py", Dpkg("9.9")  # a checkout: the source's,
    assert installed_version(code=elsewhere, prefix=prefix, packages=dpkg) == SOURCE_VERSION
    assert dpkg.asked == 0  # without asking dpkg about a package it does not run from
