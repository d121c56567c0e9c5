"""mitmdump on uvloop (libuv's event loop, compiled), with mitmdump's own arguments.

    python agent/proxy/mitmdump_uvloop.py --quiet -s agent/proxy/mitm_entry.py …

What the agent runs (`agent.collectors.proxy.mitmdump_command`).  Why: the front (front.py) does
a few rounds of the event loop per connection it passes through (mitmproxy's layers more per
intercepted request), and CPython's asyncio loop is Python code; on uvloop the proxy spends
4–8 % less CPU per request (benchmarks/proxy/RESULTS.md, "tenth session").  Nothing else
changes: the same addon, options, hooks and decisions.  Without uvloop installed (it is a
dependency of the package), mitmdump runs on asyncio's own loop, as `mitmdump` itself would.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
# run as a file, Python puts this file's folder first on sys.path; its modules (events, history, …)
# must not shadow anything, so the repository root takes that place
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = _ROOT


def use_uvloop() -> bool:
    """Make new event loops uvloop's; False (asyncio's loop stays) when uvloop is missing."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def main(arguments: list[str]) -> int | None:
    use_uvloop()
    from mitmproxy.tools.main import mitmdump

    return mitmdump(arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
