"""The addon's `request` hook on one allowed request, warm and with the CPU caches flushed first.

    .venv/bin/python benchmarks/proxy/hook_cold.py --index IDX

In a running proxy, mitmproxy's own ~1.2 ms of Python per request evicts the hook's code and data
between two requests; an 8 MiB copy before each call stands in for that.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mitmproxy.test import tflow  # noqa: E402

from agent.proxy.addon import ConnSubject, KalkanAddon  # noqa: E402
from agent.proxy.engine import Engine  # noqa: E402
from agent.proxy.subject import OsUser  # noqa: E402
from tests.proxy.conftest import TEACHER, base_bundle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", required=True)
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    addon = KalkanAddon(sink=None)
    addon._seat = "lab1-01"
    addon.engine = Engine.from_bundle(base_bundle().model_dump(mode="json"), index=args.index)
    flow = tflow.tflow(resp=True)
    flow.request.url = "http://127.0.0.1:8080/"
    flow.request.headers["host"] = "127.0.0.1:8080"
    addon._subjects[flow.client_conn.id] = ConnSubject(user=OsUser(1002, TEACHER, ()), system=False)
    junk = bytearray(8 << 20)

    def run(cold: bool) -> float:
        total = 0.0
        for _ in range(args.n):
            if cold:
                bytes(junk)
            start = time.perf_counter()
            addon.request(flow)
            total += time.perf_counter() - start
        return total / args.n * 1e6

    for _ in range(2):
        print(f"request hook: warm {run(False):.1f} µs, caches flushed first {run(True):.1f} µs")


if __name__ == "__main__":
    main()
