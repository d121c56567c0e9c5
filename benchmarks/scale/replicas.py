"""Scale-out benchmark: 1,000 simulated agents streaming the policy and posting events through
nginx to `kalkan-server` replicas on one PostgreSQL, one replica killed during the run.

Two set-ups in the same run, one after the other, on the same machine (tests/support/replicas.py:
each replica in its own network namespace, nginx in front with TLS, one PostgreSQL):

* **1 replica** behind nginx (the baseline; nothing is killed: it is the only one), and
* **2 replicas** behind nginx; replica 2 is SIGKILLed in the middle of the ingest.

For each: `--agents` agents (default 1,000) hold a policy stream (`GET /api/v1/policy/stream`,
TLS to nginx, raw asyncio sockets, reconnecting 1–2 s after a break as the agent does) spread
over `--procs` client processes; in the same processes a few HTTP/1.1 keep-alive lanes post
event batches (`--batch` events, each batch with one agent's token, the mix of a lab: blocked
pages, heartbeats, usage counts, reports) for `--seconds`; a batch that fails (connection cut,
502/503) is sent again with the same ids until the server answers, as the agent's outbox does.
Two policy changes are made by the responsible person through nginx (`POST /api/v1/usb/allow`):
one before the kill and one after it; the latency is from sending the request to each agent
reading the new version.  At the end the database is counted: `count(*)` and
`count(DISTINCT id)` of the events table against the ids the clients made (lost = made −
stored, duplicated = rows − distinct ids).

    .venv/bin/python benchmarks/scale/replicas.py [--agents 1000] [--seconds 30] [--procs 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ----------------------------------------------------------------------------- client processes


def event_templates() -> list[dict]:
    from policy_server import protocol

    subject = protocol.Subject(os_user="st1", seat="seat-1")
    made = [
        protocol.make_event("web.blocked", {"url": "http://bad.example/", "host": "bad.example",
                                            "categories": ["adult"], "group": "student"}, subject=subject),
        protocol.make_event("agent.heartbeat", {"agent_version": "0.1.0", "policy_version": 1,
                                                "collectors": {"usb": {"state": "ok"}}}),
        protocol.make_event("web.usage", {"period_start": "2025-01-01T08:00:00Z",
                                          "period_end": "2025-01-01T09:00:00Z",
                                          "counts": {"edu.kg": 12, "wikipedia.org": 3}}, subject=subject),
        protocol.make_event("web.report", {"url": "http://r.example/"}, subject=subject),
    ]
    return [e.model_dump(mode="json") for e in made]


def client_main(index: int, port: int, cert: str, agents: list[tuple[str, str]], args: dict,
                connected, stop, results) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_client(index, port, cert, agents, args, connected, stop, results))


async def _client(index, port, cert, agents, args, connected, stop, results) -> None:
    import httpx

    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    seen: list[dict[int, float]] = [{} for _ in agents]
    breaks: list[tuple[float, float]] = []  # (stream ended, stream open again), wall time
    up = [False] * len(agents)

    async def stream(k: int, token: str) -> None:
        broke_at = None
        await asyncio.sleep(k * 0.01)  # agents come up over a few seconds, not all in one instant
        while not stop.is_set():
            writer = None
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
                writer.write(f"GET /api/v1/policy/stream HTTP/1.1\r\nHost: kalkan\r\nAuthorization: Bearer "
                             f"{token}\r\nAccept: text/event-stream\r\n\r\n".encode())
                await writer.drain()
                status = await reader.readline()
                if b" 200 " not in status:
                    raise ConnectionError(status)
                while True:
                    line = await reader.readline()
                    if not line:
                        break
                    if line.startswith(b"retry:") and not up[k]:
                        up[k] = True
                        with connected.get_lock():
                            connected.value += 1
                        if broke_at is not None:
                            breaks.append((broke_at, time.time()))
                            broke_at = None
                    elif line.startswith(b"data: "):
                        version = json.loads(line[6:])["version"]
                        seen[k].setdefault(version, time.time())
            except (OSError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            if up[k]:
                up[k] = False
                with connected.get_lock():
                    connected.value -= 1
                broke_at = time.time()
            if stop.is_set():
                return
            await asyncio.sleep(1 + random.random())  # the agent's retry, with jitter

    templates = event_templates()
    made: list[str] = []
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "resent_batches": 0, "failed_posts": 0,
              "refused": 0}
    per_second: dict[int, int] = {}
    pending: list[tuple[str, bytes, list[str]]] = []

    def new_batch(k: int) -> tuple[str, bytes, list[str]]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        events, ids = [], []
        for n in range(args["batch"]):
            event = dict(templates[n % len(templates)])
            event["id"] = str(uuid.uuid4())
            event["occurred_at"] = now
            events.append(event)
            ids.append(event["id"])
        made.extend(ids)
        return agents[k][1], json.dumps({"events": events}).encode(), ids

    async def lane(client: httpx.AsyncClient, lane_no: int) -> None:
        k = lane_no
        while True:
            if pending:
                batch = pending.pop()
                counts["resent_batches"] += 1
            elif time.time() < args["ingest_until"]:
                batch = new_batch(k % len(agents))
                k += args["lanes"]
            else:
                return
            token, body, _ids = batch
            try:
                r = await client.post("/api/v1/events", content=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code not in (200, 408, 429, 500, 502, 503, 504):
                counts["refused"] = counts.get("refused", 0) + args["batch"]  # never sent again
                if counts["refused"] == args["batch"]:
                    print(f"batch refused: {r.status_code} {r.text[:300]}", file=sys.stderr, flush=True)
                continue
            if r is None or r.status_code != 200:
                counts["failed_posts"] += 1
                pending.append(batch)
                await asyncio.sleep(0.2)
                continue
            result = r.json()
            counts["accepted"] += len(result.get("accepted", []))
            counts["duplicates"] += len(result.get("duplicates", []))
            counts["rejected"] += len(result.get("rejected", []))
            second = int(time.time())
            per_second[second] = per_second.get(second, 0) + len(result.get("accepted", []))

    tasks = [asyncio.create_task(stream(k, token)) for k, (_, token) in enumerate(agents)]
    while time.time() < args["ingest_from"]:
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=30,
                                 limits=httpx.Limits(max_connections=args["lanes"])) as client:
        await asyncio.gather(*(lane(client, n) for n in range(args["lanes"])))
    while not stop.is_set():
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*tasks, return_exceptions=True)
    results.put({"index": index, "seen": seen, "breaks": breaks, "made": len(made), "counts": counts,
                 "per_second": per_second, "unacknowledged": len(pending)})


# ----------------------------------------------------------------------------- one set-up


def enrol(rig, n: int) -> list[tuple[str, str]]:
    from policy_server import protocol
    from policy_server.agents.service import create_enrollment_code, enroll
    from policy_server.school.service import ensure_room, ensure_school

    out = []
    with rig.front.db() as db:
        ensure_school(db, name="Bench School", actor="bench")
        ensure_room(db, name="lab-1", actor="bench")
        code = create_enrollment_code(db, actor="bench", room="lab-1", uses=n)
        for i in range(n):
            answer = enroll(db, protocol.EnrollRequest(code=code, hostname=f"pc-{i:04d}"))
            out.append((answer.agent_id, answer.token))
        db.commit()
    return out


def policy_version(rig) -> int:
    from sqlalchemy import func, select

    from policy_server.db.models import PolicyVersion

    with rig.front.db() as db:
        return int(db.scalar(select(func.max(PolicyVersion.version))) or 0)


def count_events(rig) -> tuple[int, int]:
    from sqlalchemy import text

    with rig.front.db() as db:
        row = db.execute(text("SELECT count(*), count(DISTINCT id) FROM events")).one()
    return int(row[0]), int(row[1])


def run_setup(replicas: int, args: argparse.Namespace, kill: bool) -> dict:
    from tests.support.replicas import ReplicaRig

    label = f"{replicas} replica{'s' if replicas > 1 else ''}" + (", one killed" if kill else "")
    print(f"\n== {label}: starting", flush=True)
    tmp = tempfile.mkdtemp(prefix="sc-bench-")  # kept when the run fails (logs), removed otherwise
    with ReplicaRig(Path(tmp), replicas=replicas, access_log=False) as rig:
        agents = enrol(rig, args.agents)
        rig.front.create_user("admin", "bench", "bench-password-long")
        admin = rig.front.login("bench", "bench-password-long")
        ctx = mp.get_context("spawn")
        connected, stop, results = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
        start = time.time()
        timing = {"ingest_from": start + 10_000, "ingest_until": 0, "batch": args.batch, "lanes": args.lanes}
        shares = [agents[k::args.procs] for k in range(args.procs)]
        # the clients start streaming at once; the ingest starts once all are connected
        procs = []
        shared = ctx.Manager().dict()
        for k, share in enumerate(shares):
            p = ctx.Process(target=client_main, args=(k, rig.nginx_port, str(rig.cert_path), share,
                                                      _Timing(shared), connected, stop, results), daemon=True)
            procs.append(p)
        shared.update(timing)
        for p in procs:
            p.start()
        try:
            got = _measure(rig, args, replicas, kill, connected, stop, results, shared, procs, admin, start)
        finally:
            stop.set()
            admin.close()
            nginx_errors = _nginx_errors(rig)
        rows, distinct = count_events(rig)
        load = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)
    return _summary(label, replicas, args, got, rows, distinct, load, nginx_errors)


def _nginx_errors(rig) -> dict[str, int]:
    """What nginx logged about its upstreams (a replica slow, refused, down)."""
    path = rig.nginx_dir / "error.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    kinds = {"connect() failed": "refused", "timed out": "timed out",
             "no live upstreams": "no live upstreams", "prematurely closed": "closed mid-answer",
             "reset by peer": "reset"}
    return {name: text.count(needle) for needle, name in kinds.items()}


def _measure(rig, args, replicas, kill, connected, stop, results, shared, procs, admin, start):
    deadline = time.time() + 180
    while connected.value < args.agents and time.time() < deadline:
        time.sleep(0.2)
    connect_s = time.time() - start
    print(f"{connected.value}/{args.agents} streams open after {connect_s:.1f} s", flush=True)
    streams_per_replica = [rig.push_connections(k) for k in range(replicas)]
    t0 = time.time() + 1
    shared.update({"ingest_from": t0, "ingest_until": t0 + args.seconds})
    pushes: dict[int, float] = {}
    killed_at = None

    def push(n: int) -> None:
        for attempt in range(5):  # a 502 (no replica answered in time) is clicked again, and said
            sent = time.time()
            r = admin.post("/api/v1/usb/allow", json={"vendor_id": "0781", "product_id": f"{5500 + n:04x}"})
            if r.status_code == 200:
                break
            print(f"push {n}: attempt {attempt + 1} answered {r.status_code}; again", flush=True)
            time.sleep(1)
        r.raise_for_status()
        pushes[policy_version(rig)] = sent

    time.sleep(max(0.0, t0 + args.seconds * 0.25 - time.time()))
    push(1)
    time.sleep(max(0.0, t0 + args.seconds * 0.5 - time.time()))
    if kill:
        killed_at = time.time()
        rig.kill(replicas - 1)
        print(f"replica {replicas} killed at +{killed_at - t0:.1f} s", flush=True)
        time.sleep(0.5)
        while connected.value < args.agents and time.time() < killed_at + 60:
            time.sleep(0.1)
    time.sleep(max(0.0, t0 + args.seconds * 0.75 - time.time()))
    push(2)
    time.sleep(max(0.0, t0 + args.seconds - time.time()) + 3)
    # let every client resend what failed, then stop
    got = []
    stop.set()
    for _ in procs:
        got.append(results.get(timeout=300))
    for p in procs:
        p.join(30)
    got.append({"t0": t0, "pushes": pushes, "killed_at": killed_at, "connect_s": connect_s,
                "streams_per_replica": streams_per_replica})
    return got


def _summary(label, replicas, args, got, rows, distinct, load, nginx_errors) -> dict:
    meta = got.pop()
    t0, pushes, killed_at = meta["t0"], meta["pushes"], meta["killed_at"]
    connect_s, streams_per_replica = meta["connect_s"], meta["streams_per_replica"]
    made = sum(g["made"] for g in got)
    counts = {k: sum(g["counts"][k] for g in got) for k in got[0]["counts"]}
    unacked = sum(g["unacknowledged"] for g in got)
    per_second: dict[int, int] = {}
    for g in got:
        for s, n in g["per_second"].items():
            per_second[int(s)] = per_second.get(int(s), 0) + n
    seconds = [per_second.get(s, 0) for s in range(int(t0), int(t0 + args.seconds))]
    push_lat = {}
    for version, sent in pushes.items():
        lat = [seen[version] - sent for g in got for seen in g["seen"] if version in seen]
        push_lat[version] = lat
    breaks = [b for g in got for b in g["breaks"]]
    out = {
        "label": label, "replicas": replicas, "connect_s": connect_s,
        "streams_per_replica": streams_per_replica,
        "made": made, "rows": rows, "distinct": distinct, "lost": made - distinct,
        "duplicated": rows - distinct,
        "counts": counts, "unacknowledged": unacked, "pushes": push_lat,
        "ingest_eps": sum(seconds) / max(1, len(seconds)),
        "ingest_first_half": statistics.mean(seconds[: len(seconds) // 2] or [0]),
        "ingest_second_half": statistics.mean(seconds[len(seconds) // 2:] or [0]),
        "reconnected": len(breaks),
        "reconnect_p95": pct([b - a for a, b in breaks], 0.95) if breaks else None,
        "all_back_s": (max(b for _, b in breaks) - killed_at) if breaks and killed_at else None,
        "load": load, "nginx_errors": nginx_errors,
    }
    for version, lat in push_lat.items():
        print(f"push v{version}: {len(lat)}/{args.agents} reached, p50 {pct(lat, .5):.3f} s, "
              f"p95 {pct(lat, .95):.3f} s, max {max(lat, default=float('nan')):.3f} s", flush=True)
    print(json.dumps({k: v for k, v in out.items() if k != "pushes"}, default=str), flush=True)
    return out


class _Timing:
    """The schedule, read live from a Manager dict (the ingest starts when all streams are up)."""

    def __init__(self, shared) -> None:
        self.shared = shared

    def __getitem__(self, key):
        return self.shared[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--lanes", type=int, default=2, help="posting connections per client process")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{platform.node()} · {os.cpu_count()} cores · load {os.getloadavg()} · "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    one = run_setup(1, args, kill=False)
    two = run_setup(2, args, kill=True)
    print("\n| measure | 1 replica | 2 replicas, one killed | ratio (2 / 1) |")
    print("| --- | ---: | ---: | ---: |")

    def row(name, a, b, fmt="{:.0f}"):
        ratio = f"{b / a:.2f}" if isinstance(a, int | float) and a else "—"
        print(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")

    row("streams open (all agents) after, s", one["connect_s"], two["connect_s"], "{:.1f}")
    row("ingest, events/s (whole run)", one["ingest_eps"], two["ingest_eps"])
    row("ingest, events/s (first half)", one["ingest_first_half"], two["ingest_first_half"])
    row("ingest, events/s (second half: after the kill)", one["ingest_second_half"],
        two["ingest_second_half"])
    for n, (v1, v2) in enumerate(zip(sorted(one["pushes"]), sorted(two["pushes"]), strict=False), 1):
        l1, l2 = one["pushes"][v1], two["pushes"][v2]
        when = "before the kill" if n == 1 else "after the kill"
        print(f"| push {n} ({when}): agents reached | {len(l1)} | {len(l2)} | |")
        row(f"push {n} ({when}): p50, s", pct(l1, .5), pct(l2, .5), "{:.3f}")
        row(f"push {n} ({when}): p95, s", pct(l1, .95), pct(l2, .95), "{:.3f}")
        row(f"push {n} ({when}): max, s", max(l1, default=0), max(l2, default=0), "{:.3f}")
    print(f"| events made by the clients | {one['made']} | {two['made']} | |")
    print(f"| events in the database (rows / distinct ids) | {one['rows']} / {one['distinct']} | "
          f"{two['rows']} / {two['distinct']} | |")
    print(f"| **lost** (made − stored) | {one['lost']} | {two['lost']} | |")
    print(f"| **duplicated** (rows − distinct) | {one['duplicated']} | {two['duplicated']} | |")
    print(f"| batches sent again after a failure | {one['counts']['resent_batches']} | "
          f"{two['counts']['resent_batches']} | |")
    print(f"| events the server answered 'duplicate' (a resent batch it had stored) | "
          f"{one['counts']['duplicates']} | {two['counts']['duplicates']} | |")
    print(f"| streams that broke and reopened | {one['reconnected']} | {two['reconnected']} | |")
    back = "—" if two["all_back_s"] is None else f"{two['all_back_s']:.1f}"
    print(f"| all streams open again after the kill, s | — | {back} | |")
    load = [" / ".join(f"{x:.1f}" for x in r["load"]) for r in (one, two)]
    print(f"| load average (1/5/15 min) at the end | {load[0]} | {load[1]} | |")
    print(f"| nginx's upstream errors | {one['nginx_errors']} | {two['nginx_errors']} | |")


if __name__ == "__main__":
    main()
