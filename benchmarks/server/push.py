"""Policy push benchmark: a change reaching 1,000 connected SSE agents, p95 latency.

Starts the real `kalkan-server run` (plain HTTP here, so that the single client process can
hold 1,000 connections without paying for 1,000 TLS handshakes on this 2-core machine),
opens 1,000 `GET /api/v1/policy/stream` connections with raw asyncio sockets, then:

* `push`     — an admin changes the policy through the API (`POST /api/v1/usb/allow`); the
               server's push hub broadcasts after the commit.  Latency = from sending that
               request to each agent reading the new version.
* `baseline` — the same change made from another process (`amend_policy` on the database),
               which the server only notices through its 2-second database poll: what agents
               would get without the in-process hub.  Measured in the same run.

On PostgreSQL (`--postgres`, a throwaway cluster) a change made by another process arrives
through `LISTEN/NOTIFY` instead of the poll, and `--workers 2` spreads the agents over two
server processes, so the admin's change reaches half of them through NOTIFY as well.

    .venv/bin/python benchmarks/server/push.py [--agents 1000] [--postgres [--workers 2]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


async def agent(port: int, token: str, ready: asyncio.Event, counter: list[int], n: int,
                versions: dict[int, list[float]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/v1/policy/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    counted = False
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"retry:") and not counted:
            counted = True
            counter[0] += 1
            if counter[0] == n:
                ready.set()
        if line.startswith(b"data: "):
            version = json.loads(line[6:])["version"]
            versions.setdefault(version, []).append(time.perf_counter())


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


@contextlib.contextmanager
def database(postgres: bool):
    """None (the server's own SQLite file), or the URL of a database in a throwaway cluster."""
    if not postgres:
        yield None
        return
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster.create_database()
    finally:
        cluster.stop()


async def run(n: int, postgres: bool, workers: int) -> None:
    from tests.support.server import KalkanServerProcess

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    os.environ["KALKAN_WORKERS"] = str(workers)  # read by `kalkan-server run`
    with (database(postgres) as db_url, tempfile.TemporaryDirectory() as tmp,
          KalkanServerProcess(Path(tmp) / "s", db_url=db_url, tls=False) as server):
        _, token = server.enroll("pc-bench", room="lab-1")
        server.create_user("admin", "bench", "bench-password")
        admin = server.login("bench", "bench-password")
        ready, counter, versions = asyncio.Event(), [0], {}
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(agent(server.port, token, ready, counter, n, versions)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # connect in waves, like agents after a server restart
        await asyncio.wait_for(ready.wait(), 120)
        print(f"{n} agents connected in {time.perf_counter() - start:.1f}s", flush=True)
        await asyncio.sleep(1)

        results = {}
        for label, version in (("push", 1), ("baseline", 2)):
            sent = time.perf_counter()
            if label == "push":
                await asyncio.to_thread(admin.post, "/api/v1/usb/allow",
                                        json={"vendor_id": "0781", "product_id": "5567"})
            else:
                await asyncio.to_thread(server.amend_policy, "external change", lambda b: b)
            deadline = time.perf_counter() + 30
            while len(versions.get(version, [])) < n and time.perf_counter() < deadline:
                await asyncio.sleep(0.02)
            lat = [t - sent for t in versions.get(version, [])]
            results[label] = lat
            print(f"{label}: {len(lat)}/{n} received, p50 {pct(lat, .5):.3f}s p95 {pct(lat, .95):.3f}s "
                  f"max {max(lat):.3f}s mean {statistics.mean(lat):.3f}s", flush=True)
        admin.close()
        for t in tasks:
            t.cancel()
    p = results["push"]
    b = results["baseline"]
    other = "another process, LISTEN/NOTIFY" if postgres else "baseline: another process, DB poll 2 s"
    print(f"\n{'PostgreSQL' if postgres else 'SQLite'}, {workers} worker(s)")
    print("\n| measure | agents reached | p50 | p95 | max | goal p95 | goal / p95 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, lat in (("admin change through the API", p), (other, b)):
        print(f"| {label} | {len(lat)}/{n} | {pct(lat, .5):.3f} s | {pct(lat, .95):.3f} s | {max(lat):.3f} s "
              f"| 1.0 s | {1.0 / pct(lat, .95):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster")
    parser.add_argument("--workers", type=int, default=1, help="server processes (more than 1: PostgreSQL)")
    args = parser.parse_args()
    asyncio.run(run(args.agents, args.postgres, args.workers))


if __name__ == "__main__":
    main()
