"""Hot-plug event → `authorized=0` latency of the USB collector.

    .venv/bin/python benchmarks/usb/run.py [--plugs 500]

A fake sysfs tree (the same adapter as on a workstation) gets a flash drive
plugged `--plugs` times under fresh bus names; each time a synthetic uevent
is pushed and the clock runs until the collector's write of `authorized=0`
returns.  Side by side in the same run: the event-driven path (what the kernel
netlink listener feeds) and the polling fallback (0.1 s interval, the default), so the
fallback's cost is visible.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.collectors.base import CollectorContext  # noqa: E402
from agent.collectors.usb import UsbCollector  # noqa: E402
from agent.platform.usb import FakeHotplug, FakeUsbTree, PollingHotplug, SysfsUsb, UsbUevent  # noqa: E402
from policy_server.protocol import PolicyBundle  # noqa: E402
from tests.support.recording_sink import RecordingSink  # noqa: E402

STICK = json.loads((REPO / "tests" / "usb" / "devices" / "flash_serial.json").read_text())
KEYBOARD = json.loads((REPO / "tests" / "usb" / "devices" / "keyboard.json").read_text())


def measure(kind: str, plugs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="kalkan-usb-bench-") as tmp:
        tree = FakeUsbTree(Path(tmp) / "sys")
        tree.plug(KEYBOARD)
        adapter = SysfsUsb(tree.root)
        source = FakeHotplug() if kind == "event" else PollingHotplug(adapter, interval_s=0.1)
        ctx = CollectorContext(sink=RecordingSink(), state_dir=Path(tmp) / "state", policy=PolicyBundle())
        collector = UsbCollector(ctx, sysfs_root=tree.root, hotplug=source)
        done: dict[str, float] = {}
        blocked = threading.Condition()
        real_write = collector.adapter.set_authorized

        def timed_write(name: str, authorized: bool) -> None:
            real_write(name, authorized)
            with blocked:
                done[name] = time.perf_counter()
                blocked.notify_all()

        collector.adapter.set_authorized = timed_write
        collector.start()
        latencies = []
        try:
            for i in range(plugs):
                name = f"2-{i + 1}"
                tree.plug(STICK, name)
                plugged = time.perf_counter()
                if kind == "event":
                    source.push(UsbUevent("add", name, "usb_device"))
                with blocked:
                    if not blocked.wait_for(lambda n=name: n in done, timeout=5):
                        raise RuntimeError(f"{name} was not blocked within 5 s")
                latencies.append(done[name] - plugged)
                tree.unplug(name)
                if kind == "event":
                    source.push(UsbUevent("remove", name, "usb_device"))
        finally:
            collector.stop()
        if tree.authorized("1-1") != "1":
            raise RuntimeError("the keyboard was deauthorised")
        return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugs", type=int, default=500)
    parser.add_argument("--poll-plugs", type=int, default=100, help="plugs for the polling fallback")
    args = parser.parse_args()
    results = {
        "uevent → authorized=0 (netlink path, synthetic events)": measure("event", args.plugs),
        "polling fallback (0.1 s interval, the default)": measure("poll", args.poll_plugs),
    }
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    import os

    print(f"machine: nproc={os.cpu_count()}, CPU {cpu}; date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print()
    print("| path | plugs | median ms | p99 ms | max ms | goal p99 ≤ 200 ms |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        p99 = pct(ms, 0.99)
        print(
            f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {p99:.2f} | {max(ms):.2f} | "
            f"{'met' if p99 <= 200 else 'MISSED'} ({p99 / 200:.3f} of the budget) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
