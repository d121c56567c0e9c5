"""Which version of the agent runs: the Debian package's, as dpkg has it, when the agent runs
from the package (`/opt/kalkan/venv`); the source's (`agent.__version__`) otherwise (a checkout,
the tests, the demo).

Why not `agent.__version__` alone: it is the source's version, the same in every package built
from that source, so after an upgrade to `0.1.0+school2` the seat still said `0.1.0` on the fleet
page and in the rollout's "from" column.  dpkg's record is what the package manager installed,
whatever the package was built as.  Asked once per process (the upgrade's own `dpkg-query`)."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

from agent import __version__ as SOURCE_VERSION
from agent.upgrade import PackageManager

PACKAGE_PREFIX = Path("/opt/kalkan")


def installed_version(*, code: Path | None = None, prefix: Path = PACKAGE_PREFIX,
                      packages: PackageManager | None = None) -> str:
    code = (code or Path(__file__)).resolve()
    if not code.is_relative_to(prefix):
        return SOURCE_VERSION
    try:
        return (packages or PackageManager(root="")).installed() or SOURCE_VERSION
    except (OSError, subprocess.SubprocessError):  # no dpkg-query, or it hung: the source's
        return SOURCE_VERSION


@cache
def agent_version() -> str:
    return installed_version()
