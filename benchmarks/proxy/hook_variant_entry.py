"""Benchmark-only mitmdump entry: the Kalkan addon with some hooks replaced by no-ops.

    KALKAN_HOOK_VARIANT=reqonly mitmdump -s benchmarks/proxy/hook_variant_entry.py …

Variants: full, noreq (request and response no-ops), reqonly (response a no-op), responly
(request a no-op), nohooks (no connection or request hooks), inert (nohooks and no background
task), timed (full, and the `request` hook's own wall and thread-CPU time per call, and the
`response` hook's thread-CPU time, are written to /tmp/kalkan-hook-times-<pid>.txt every 2,000
requests; `hook_bisect.py` sums them per variant), gcfreeze (full, and `gc.freeze()` once
running: the policy and every module loaded so far leave the cyclic collector's walks).
`hook_bisect.py` runs them side by side to find which hook carries a cost.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.environ.get("KALKAN_CODE") or str(Path(__file__).resolve().parents[2]))

from agent.proxy.addon import KalkanAddon  # noqa: E402

MODE = os.environ.get("KALKAN_HOOK_VARIANT", "full")
CONNECTION_HOOKS = ("next_layer", "client_connected", "client_disconnected", "tls_clienthello",
                    "server_connect")


class Variant(KalkanAddon):
    pass


def _no_op(self, flow) -> None:
    return None


if MODE in ("noreq", "responly"):
    Variant.request = _no_op
if MODE in ("noreq", "reqonly"):
    Variant.response = _no_op
if MODE in ("nohooks", "inert"):
    for name in (*CONNECTION_HOOKS, "request", "response"):
        setattr(Variant, name, None)
if MODE == "inert":
    Variant.running = None

if MODE == "timed":
    import time

    _real_request, _real_response = KalkanAddon.request, KalkanAddon.response
    _totals = [0, 0, 0, 0, 0]  # request calls, wall ns, thread CPU ns; response calls, thread CPU ns
    _LABEL = os.environ.get("KALKAN_TIMED_LABEL", "timed")

    def _timed_request(self, flow) -> None:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        _real_request(self, flow)
        _totals[1] += time.perf_counter_ns() - wall
        _totals[2] += time.thread_time_ns() - cpu
        _totals[0] += 1
        if _totals[0] % 2000 == 0:
            Path(f"/tmp/kalkan-hook-times-{os.getpid()}.txt").write_text(
                f"{_totals[0]} calls, wall {_totals[1] / _totals[0] / 1000:.1f} µs, "
                f"thread CPU {_totals[2] / _totals[0] / 1000:.1f} µs per call; response "
                f"{_totals[4] / max(_totals[3], 1) / 1000:.1f} µs thread CPU per call\n"
                f"{_LABEL} {' '.join(map(str, _totals))}\n")

    def _timed_response(self, flow) -> None:
        cpu = time.thread_time_ns()
        _real_response(self, flow)
        _totals[4] += time.thread_time_ns() - cpu
        _totals[3] += 1

    Variant.request = _timed_request
    Variant.response = _timed_response

if MODE == "gcfreeze":  # the full addon, and everything loaded so far out of the collector's walks
    import gc

    def _running_then_freeze(self) -> None:
        KalkanAddon.running(self)
        gc.freeze()

    Variant.running = _running_then_freeze

addons = [Variant()]
