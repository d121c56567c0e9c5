"""mitmdump with the Kalkan addon in its own addon chain (not loaded as a `-s` script).

    python agent/proxy/mitmdump_main.py [mitmdump's usual arguments] --set kalkan_state_dir=…

Same command line, options and behaviour as `mitmdump -s agent/proxy/mitm_entry.py …` (which still
works for running the proxy by hand).  The addon is put where a `-s` script's addons sit — right
after mitmproxy's ScriptLoader, before its NextLayer addon — so every hook runs in the same order,
but mitmproxy no longer watches a script file or walks ScriptLoader → Script → module on every
event (see benchmarks/proxy/RESULTS.md, "Sixth pass", for what that costs).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[2])
# run as a file, Python puts this file's folder first on sys.path; its modules (events, history, …)
# must not shadow anything, so the repository root takes that place
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = _ROOT
elif _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def insert_after_script_loader(manager: Any, addon: object) -> None:
    """Register `addon` with mitmproxy's AddonManager and place it in the chain just after the
    ScriptLoader (where `-s` scripts' addons run), or at the end if there is none."""
    from mitmproxy.addons.script import ScriptLoader

    manager.register(addon)
    position = next((i + 1 for i, existing in enumerate(manager.chain) if isinstance(existing, ScriptLoader)),
                    len(manager.chain))
    manager.chain.insert(position, addon)


def _filter_options(args: Any) -> dict:
    """mitmdump's own handling of a trailing flow filter (`mitmproxy.tools.main.mitmdump`)."""
    if args.filter_args:
        expression = " ".join(args.filter_args)
        return {"save_stream_filter": expression, "readfile_filter": expression,
                "dumper_filter": expression}
    return {}


def master_class(make_addon: Callable[[], object] | None = None) -> type:
    """mitmdump's DumpMaster with `make_addon()` (default: a KalkanAddon) in its addon chain."""
    from mitmproxy.tools import dump

    if make_addon is None:
        from agent.proxy.addon import KalkanAddon

        make_addon = KalkanAddon

    class KalkanDumpMaster(dump.DumpMaster):
        def __init__(self, options: Any, **kwargs: Any) -> None:
            super().__init__(options, **kwargs)
            insert_after_script_loader(self.addons, make_addon())

    return KalkanDumpMaster


def run(arguments: Sequence[str], make_addon: Callable[[], object] | None = None) -> None:
    """Run mitmdump (same arguments) with `make_addon()` in the master's addon chain."""
    from mitmproxy.tools import cmdline
    from mitmproxy.tools import main as mitm_main

    mitm_main.run(master_class(make_addon), cmdline.mitmdump, arguments, _filter_options)


if __name__ == "__main__":
    run(sys.argv[1:])
