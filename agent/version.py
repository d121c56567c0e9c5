"""Which version of the agent runs: the Debian package's, as dpkg has it, when the agent runs
from the package (`/opt/kalkan/venv`); the source's (`agent.__version__`) otherwise (a checkout,
the tests, the demo).

Why not `agent.__version__` alone: it is the source's version, the same in every package built
from that source, so after an upgrade to `0.1.0+school2` the seat still said `0.1.0` on the fleet
page and in the rollout's "from" column.  dpkg's record is what the package manager installed,
whatever the package was built as.  Read once per process, from the status file (no subprocess:
this is on every agent's start and in every heartbeat)."""

from __future__ import annotations

from functools import cache
from itertools import chain
from pathlib import Path

from agent import __version__ as SOURCE_VERSION

PACKAGE = "kalkan-agent"
PACKAGE_PREFIX = Path("/opt/kalkan")
DPKG_STATUS = Path("/var/lib/dpkg/status")


def package_version(lines, package: str = PACKAGE) -> str | None:
    """The installed version of `package` in a dpkg status file's lines, or None.  Line by line:
    a desktop's status file is megabytes, and the agent's footprint is kept small."""
    name = status = version = None
    for line in chain(lines, [""]):
        line = line.rstrip("\n")
        if not line:  # the end of a package's stanza
            if name == package and status is not None and status.endswith(" installed"):
                return version
            name = status = version = None
        elif line.startswith("Package: "):
            name = line[9:]
        elif line.startswith("Status: "):
            status = line[8:]
        elif line.startswith("Version: "):
            version = line[9:]
    return None


def installed_version(*, code: Path | None = None, prefix: Path = PACKAGE_PREFIX,
                      status: Path = DPKG_STATUS) -> str:
    code = (code or Path(__file__)).resolve()
    if not code.is_relative_to(prefix):
        return SOURCE_VERSION
    try:
        with open(status, errors="replace") as lines:
            return package_version(lines) or SOURCE_VERSION
    except OSError:
        return SOURCE_VERSION


@cache
def agent_version() -> str:
    return installed_version()
