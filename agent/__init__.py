"""Kalkan workstation agent (see docs/agent.md)."""

import sys

__version__ = "0.1.0"

# httpx imports its optional command-line tool (click, pygments) whenever those packages are
# installed, and mitmproxy installs them.  The agent never uses httpx's CLI; keeping it out
# saves ~2 MB in every agent process (the footprint goal is 50 MB: benchmarks/agent).
# A module set to None in sys.modules makes that optional import fail the way httpx expects.
sys.modules.setdefault("httpx._main", None)
