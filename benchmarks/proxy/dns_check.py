"""What the destination check (agent/proxy/destcheck.py) costs a connection: cold and warm names.

    sudo .venv/bin/python benchmarks/proxy/dns_check.py [--names 1000]

A "workstation" network namespace whose resolver (resolv.conf, as `ip netns exec` mounts it) is
a real DNS server in a second namespace across a veth pair (`tests/proxy/netns_internet.py`'s
server: A and AAAA records, like a school's LAN resolver answering from its cache).  In the
workstation, one asyncio loop — as in the proxy — checks distinct names once each (cold: the
check asks the resolver through `getaddrinfo` in a thread) and then again (warm: the cache, what
every later connection to a name costs).  The floor is a bare `getaddrinfo` of other names in
the same loop (what any proxy that resolves pays).  Prints p50/p95/p99 in ms (warm in µs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SERVER = r"""
import socketserver, sys, json, threading
sys.path.insert(0, sys.argv[1])
from netns_internet import Dns
zone = json.load(open(sys.argv[2]))
handler = type("D", (Dns,), {"zone": zone})
server = socketserver.ThreadingUDPServer(("10.79.0.2", 53), handler)
print("ready", flush=True)
server.serve_forever()
"""

CLIENT = r"""
import asyncio, json, socket, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from agent.proxy.destcheck import DestinationCheck
n = int(sys.argv[2])

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

async def main():
    check = DestinationCheck()
    loop = asyncio.get_running_loop()
    floor, cold, warm = [], [], []
    for i in range(n):  # the floor: a bare lookup of other names, in a thread as the proxy would
        t = time.perf_counter()
        await asyncio.to_thread(socket.getaddrinfo, f"floor{i}.bench.test", None, proto=socket.IPPROTO_TCP)
        floor.append(time.perf_counter() - t)
    for i in range(n):
        name, address = f"name{i}.bench.test", f"10.80.{i // 250}.{i % 250 + 1}"
        t = time.perf_counter()
        ok = check.leads_to_cached(name, address)
        if ok is None:
            ok = await check.leads_to(name, address)
        cold.append(time.perf_counter() - t)
        assert ok, (name, address)
    for i in range(n):
        name, address = f"name{i}.bench.test", f"10.80.{i // 250}.{i % 250 + 1}"
        t = time.perf_counter()
        ok = check.leads_to_cached(name, address)
        warm.append(time.perf_counter() - t)
        assert ok is True
    # a mismatch is looked up once more before it is refused (round-robin DNS): its cost
    mismatch = []
    await asyncio.sleep(1.1)  # answers older than a second: a mismatch asks the resolver again
    for i in range(min(n, 200)):
        t = time.perf_counter()
        ok = await check.leads_to(f"name{i}.bench.test", "10.99.99.99")
        mismatch.append(time.perf_counter() - t)
        assert ok is False
    out = {}
    for label, values in (("floor", floor), ("cold", cold), ("warm", warm), ("mismatch", mismatch)):
        out[label] = [pct(values, 50), pct(values, 95), pct(values, 99)]
    print(json.dumps(out))

asyncio.run(main())
"""


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=1000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: network namespaces")
    tag = uuid.uuid4().hex[:6]
    ws, net = f"nobypass-bw{tag}", f"nobypass-bn{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="kalkan-dns-"))
    zone = {
        f"name{i}.bench.test": [f"10.80.{i // 250}.{i % 250 + 1}", f"fd80::{i + 1:x}"]
        for i in range(args.names)
    }
    zone.update({f"floor{i}.bench.test": ["10.81.0.1"] for i in range(args.names)})
    (tmp / "zone.json").write_text(json.dumps(zone))
    etc = Path("/etc/netns") / ws
    etc.mkdir(parents=True)
    (etc / "resolv.conf").write_text("nameserver 10.79.0.2\noptions timeout:1 attempts:2\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n")
    server = None
    try:
        sh("ip", "netns", "add", ws)
        sh("ip", "netns", "add", net)
        sh(
            "ip",
            "link",
            "add",
            f"nbd{tag}a",
            "netns",
            ws,
            "type",
            "veth",
            "peer",
            "name",
            f"nbd{tag}b",
            "netns",
            net,
        )
        sh("ip", "netns", "exec", ws, "ip", "addr", "add", "10.79.0.1/24", "dev", f"nbd{tag}a")
        sh("ip", "netns", "exec", ws, "ip", "link", "set", f"nbd{tag}a", "up")
        sh("ip", "netns", "exec", ws, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", net, "ip", "addr", "add", "10.79.0.2/24", "dev", f"nbd{tag}b")
        sh("ip", "netns", "exec", net, "ip", "link", "set", f"nbd{tag}b", "up")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                net,
                sys.executable,
                "-c",
                SERVER,
                str(REPO / "tests" / "proxy"),
                str(tmp / "zone.json"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout.readline().strip() == "ready"
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        out = subprocess.run(
            ["ip", "netns", "exec", ws, sys.executable, "-c", CLIENT, str(REPO), str(args.names)],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        subprocess.run(["ip", "netns", "del", ws], capture_output=True)
        subprocess.run(["ip", "netns", "del", net], capture_output=True)
        subprocess.run(["rm", "-rf", str(etc), str(tmp)])
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    print(
        f"machine: nproc={os.cpu_count()}, CPU {cpu}; {started}; 1-min load average {load:.1f}; "
        f"{args.names} distinct names"
    )
    print()
    print("| lookup | p50 | p95 | p99 |")
    print("| --- | --- | --- | --- |")
    for label, title, scale, unit in (
        ("floor", "bare getaddrinfo in a thread (the floor)", 1e3, "ms"),
        ("cold", "destination check, cold name", 1e3, "ms"),
        ("warm", "destination check, warm name", 1e6, "µs"),
        ("mismatch", "mismatch (looked up again before refusing)", 1e3, "ms"),
    ):
        p50, p95, p99 = (v * scale for v in result[label])
        print(f"| {title} | {p50:.3f} {unit} | {p95:.3f} {unit} | {p99:.3f} {unit} |")


if __name__ == "__main__":
    main()
