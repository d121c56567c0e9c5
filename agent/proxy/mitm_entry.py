"""mitmdump's entry script: `mitmdump -s <this file> --set kalkan_state_dir=…`.

mitmproxy loads scripts by path, so the repository root is put on sys.path first.
"""

import sys
from pathlib import Path

from mitmproxy import hooks as _hooks

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from agent.proxy.addon import KalkanAddon  # noqa: E402

addons = [KalkanAddon()]

# mitmproxy treats a script's module as an addon too: on every event it asks this module for
# the hook by name (`getattr(module, name, None)`) before it walks into `addons`.  A name a
# module lacks costs CPython 3.11 an AttributeError with its message (~1 µs); a keep-alive
# plain-HTTP request fires eight events (requestheaders, request, responseheaders, response,
# each followed by update).  A name bound to None is skipped the same way (`if func:` in
# `AddonManager._iter_hooks`) for a dict lookup, so every hook name is bound to None here.
PER_REQUEST_HOOKS = ("requestheaders", "request", "responseheaders", "response", "update")
for _name in (*_hooks.all_hooks, *PER_REQUEST_HOOKS):
    if _name not in globals():
        globals()[_name] = None
