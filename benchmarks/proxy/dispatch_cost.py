"""What mitmproxy's event dispatch costs per plain-HTTP request for an addon loaded as a `-s` script
against the same addon in the master's own chain (`agent/proxy/mitmdump_main.py`), in-process.

    .venv/bin/python benchmarks/proxy/dispatch_cost.py [--requests 20000] [--repeats 7]

The addon has no-op `request` and `response` hooks (its own work is not what is measured).  Each
"request" fires the four per-request events of a keep-alive plain-HTTP request (requestheaders,
request, responseheaders, response) through `AddonManager.trigger_event` of a full DumpMaster with
mitmdump's default addons, on one test flow.  The two masters are timed alternately, `--repeats`
times; printed: thread CPU µs per request, median and min of the repeats, and their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mitmproxy import options  # noqa: E402
from mitmproxy.proxy.layers.http import (  # noqa: E402
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import tflow  # noqa: E402
from mitmproxy.tools import dump  # noqa: E402

from agent.proxy.mitmdump_main import insert_after_script_loader  # noqa: E402

SCRIPT = '''
class NoOp:
    def request(self, flow):
        pass

    def response(self, flow):
        pass


addons = [NoOp()]
'''


class NoOp:
    def request(self, flow) -> None:
        pass

    def response(self, flow) -> None:
        pass


async def script_master(path: Path) -> dump.DumpMaster:
    master = dump.DumpMaster(options.Options(), with_termlog=False)
    master.options.update(flow_detail=0, scripts=[str(path)])  # flow_detail 0: as with --quiet
    for _ in range(20):  # the Script's watcher loads the file on a later turn of the loop
        await asyncio.sleep(0.01)
    loaded = [a for a in master.addons.chain if type(a).__name__ == "ScriptLoader"][0].addons
    assert loaded and loaded[0].addons, "the script did not load"
    return master


def direct_master() -> dump.DumpMaster:
    master = dump.DumpMaster(options.Options(), with_termlog=False)
    master.options.update(flow_detail=0)
    insert_after_script_loader(master.addons, NoOp())
    return master


async def cpu_per_request(master: dump.DumpMaster, requests: int) -> float:
    flow = tflow.tflow(resp=True)
    events = [HttpRequestHeadersHook(flow), HttpRequestHook(flow), HttpResponseHeadersHook(flow),
              HttpResponseHook(flow)]
    trigger = master.addons.trigger_event
    start = time.thread_time_ns()
    for _ in range(requests):
        for event in events:
            await trigger(event)
    return (time.thread_time_ns() - start) / requests / 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp(prefix="kalkan-dispatch-")) / "noop_addon.py"
    path.write_text(SCRIPT)
    masters = {"script": await script_master(path), "direct": direct_master()}
    figures: dict[str, list[float]] = {name: [] for name in masters}
    for master in masters.values():
        await cpu_per_request(master, 2000)  # warm-up
    for i in range(args.repeats):
        for name in (masters if i % 2 == 0 else reversed(masters)):
            figures[name].append(await cpu_per_request(masters[name], args.requests))
    for name, values in figures.items():
        print(f"{name:7s} dispatch CPU µs/request: median {statistics.median(values):6.2f}  "
              f"min {min(values):6.2f}  ({', '.join(f'{v:.2f}' for v in values)})")
    diff = statistics.median(figures["script"]) - statistics.median(figures["direct"])
    print(f"script - direct: {diff:.2f} µs per request (medians)")


if __name__ == "__main__":
    asyncio.run(main())
