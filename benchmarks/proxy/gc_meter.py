"""mitmdump script (benchmarks only): how much of the proxy's time the cyclic garbage collector takes.

    mitmdump -s benchmarks/proxy/gc_meter.py --set bench_gc=/tmp/x.json …

Every collection is timed (`gc.callbacks`, thread CPU time of the collecting thread) and counted
per generation.  On SIGUSR1 the running totals are written to `bench_gc` as JSON
(`{"seq": n, "gens": {"0": [collections, cpu_ns], …}}`), so a benchmark can take them before and
after a slice of load (ab.py `--gc`).  Loaded into every variant alike, bare mitmdump included.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time

from mitmproxy import ctx


class GcMeter:
    def __init__(self) -> None:
        self.totals: dict[int, list[int]] = {}
        self.started_at = 0
        self.seq = 0

    def load(self, loader) -> None:
        loader.add_option("bench_gc", str, "", "file the GC totals are written to on SIGUSR1")

    def running(self) -> None:
        if not ctx.options.bench_gc:
            return
        gc.callbacks.append(self._collected)
        signal.signal(signal.SIGUSR1, self._write)

    def _collected(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started_at = time.thread_time_ns()
            return
        total = self.totals.setdefault(info["generation"], [0, 0])
        total[0] += 1
        total[1] += time.thread_time_ns() - self.started_at

    def _write(self, *_) -> None:
        self.seq += 1
        path = ctx.options.bench_gc
        with open(path + ".tmp", "w") as out:
            json.dump({"seq": self.seq, "gens": self.totals}, out)
        os.replace(path + ".tmp", path)


addons = [GcMeter()]
