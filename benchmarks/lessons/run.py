"""Lesson benchmarks: the real `kalkan-server run` (SQLite, plain HTTP), 30 seats of one room.

* `seat events` — 30 seats each post a blocked attempt (`web.blocked`, a unique host) once a
  second for `--seconds`; the teacher's browser holds the lesson page's live stream
  (`GET /lessons/{id}/live`, SSE).  Latency = from an agent starting its POST to the host's
  first appearance in the stream.  Baseline in the same run: one seat streaming alone.
  Goal: p95 ≤ 1 s.
* `lesson start` — 30 agents hold the policy push stream and, like the real agent, fetch their
  bundle (`GET /api/v1/policy`, only their room's lessons) when told.  Latency = from the
  teacher's `POST /api/v1/lessons` to each agent holding a bundle with the lesson.  Baseline:
  a school-wide policy change (`POST /api/v1/usb/allow`) through the same push.  Goal: p95 ≤ 2 s.
  (On a workstation the proxy then reads the bundle file; its watch polls every 0.5 s: see
  agent/proxy/watch.py, and tests/e2e/test_lesson_browser.py for the whole chain.)
* `page weight` — the lesson page with 30 seats and everything it loads (CSS, htmx + SSE
  extension), uncompressed.  Baseline: the incidents list page.  Goal ≤ 100 KB, no web fonts.

    .venv/bin/python benchmarks/lessons/run.py [--seats 30] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.server import KalkanServerProcess  # noqa: E402

ADMIN = ("boss", "bench-admin-password")
COUNT = re.compile(r"blocked: (\d+)")
TEACHER = ("aigul", "bench-teacher-password")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stats(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(pct(values, 0.5) * 1000, 1),
            "p95_ms": round(pct(values, 0.95) * 1000, 1), "max_ms": round(max(values) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1)}


def setup(server: KalkanServerProcess, seats: int) -> list[tuple[str, str]]:
    from policy_server.db.models import Person, PersonRoom, Room

    server.create_user("admin", *ADMIN)
    server.create_user("teacher", *TEACHER)
    agents = [(f"s{i:02d}", server.enroll(f"pc-{i:02d}", seat=f"s{i:02d}",
                                          room="lab-1")[1]) for i in range(seats)]
    server.enroll("pc-other", seat="s00", room="lab-2")
    with server.db() as db:
        teacher = db.query(Person).filter_by(username=TEACHER[0]).one()
        db.add(PersonRoom(person_id=teacher.id, room_id=db.query(Room).filter_by(name="lab-1").one().id))
        db.commit()
    return agents


def login_cookies(server: KalkanServerProcess, username: str, password: str) -> tuple[dict, str]:
    with server.client() as c:
        r = c.post("/api/v1/login", json={"username": username, "password": password})
        r.raise_for_status()
        return dict(c.cookies), r.json()["csrf_token"]


# ----------------------------------------------------------------------------- lesson start


async def hold_policy(client: httpx.AsyncClient, token: str, want, ready: asyncio.Event, counter: list[int],
                      n: int, seen: dict) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    async with client.stream("GET", "/api/v1/policy/stream", headers=auth, timeout=None) as response:
        async for line in response.aiter_lines():
            if line.startswith("retry:"):
                counter[0] += 1
                if counter[0] == n:
                    ready.set()
            if line.startswith("data: ") and want["check"] is not None:
                bundle = (await client.get("/api/v1/policy", headers=auth)).json()
                key = want["check"](bundle)
                if key is not None and (token, key) not in seen:
                    seen[(token, key)] = time.perf_counter()


async def lesson_start(server, agents) -> dict:
    cookies, csrf = login_cookies(server, *TEACHER)
    admin_cookies, admin_csrf = login_cookies(server, *ADMIN)
    want = {"check": None}
    seen: dict = {}
    ready, counter = asyncio.Event(), [0]
    limits = httpx.Limits(max_connections=len(agents) * 2 + 10)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
        tasks = [asyncio.create_task(hold_policy(client, token, want, ready, counter, len(agents), seen))
                 for _seat, token in agents]
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(1.0)
        results = {}
        async with httpx.AsyncClient(base_url=server.url, cookies=admin_cookies, timeout=30) as admin:
            # baseline: a school-wide change through the same push
            want["check"] = lambda b: "usb" if any(e["vendor_id"] == "0781"
                                                   for e in b["usb"]["allow"]) else None
            t0 = time.perf_counter()
            r = await admin.post("/api/v1/usb/allow", json={"vendor_id": "0781", "product_id": "5567"},
                                 headers={"X-CSRF-Token": admin_csrf})
            r.raise_for_status()
            await wait_all(seen, "usb", len(agents))
            results["baseline_policy_change"] = stats([t - t0 for (tok, k), t in seen.items() if k == "usb"])
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(base_url=server.url, cookies=cookies, timeout=30) as teacher:
            ends = (datetime.now(UTC) + timedelta(minutes=40)).isoformat()
            want["check"] = lambda b: "lesson" if b["lessons"] else None
            t0 = time.perf_counter()
            r = await teacher.post("/api/v1/lessons", json={"room": "lab-1", "ends_at": ends},
                                   headers={"X-CSRF-Token": csrf})
            r.raise_for_status()
            await wait_all(seen, "lesson", len(agents))
            results["lesson_start"] = stats([t - t0 for (tok, k), t in seen.items() if k == "lesson"])
            results["lesson_id"] = r.json()["id"]
        for task in tasks:
            task.cancel()
    return results


async def wait_all(seen: dict, key: str, n: int, timeout: float = 20.0) -> None:
    deadline = time.perf_counter() + timeout
    while sum(1 for (_t, k) in seen if k == key) < n:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {sum(1 for (_t, k) in seen if k == key)} of {n} agents got {key}")
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------- seat events


async def seat_events(server, agents, lesson_id: str, seconds: float) -> dict:
    """Each seat's k-th blocked attempt has arrived when its tile first shows "blocked: k" (or
    more) in the stream: robust to renders that coalesce several events."""
    cookies, _csrf = login_cookies(server, *TEACHER)
    sent: dict[tuple[str, int], float] = {}
    arrived: dict[tuple[str, int], float] = {}
    counts: dict[str, int] = {}  # each seat's count as last shown (earlier runs count too)
    stop = asyncio.Event()

    async def teacher_page(client):
        message: list[str] = []
        async with client.stream("GET", f"/lessons/{lesson_id}/live?lang=en", timeout=None) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    message.append(line)
                    continue
                if not message:
                    continue
                now = time.perf_counter()
                for tile in "\n".join(message).split('id="seat-')[1:]:
                    seat_name = tile.split('"', 1)[0]
                    found = COUNT.search(tile)
                    shown = int(found.group(1)) if found else 0
                    counts[seat_name] = shown
                    for k in range(1, shown + 1):
                        arrived.setdefault((seat_name, k), now)
                message = []

    async def seat(client, seat_name: str, token: str, offset: float, already: int):
        await asyncio.sleep(offset)
        auth = {"Authorization": f"Bearer {token}"}
        k = already
        while not stop.is_set():
            k += 1
            host = f"h{uuid.uuid4().hex[:10]}.example"
            event = {"id": str(uuid.uuid4()), "type": "web.blocked",
                     "occurred_at": datetime.now(UTC).isoformat(),
                     "subject": {"os_user": f"pupil-{seat_name}", "seat": seat_name},
                     "data": {"url": f"http://{host}/", "host": host}}
            sent[(seat_name, k)] = time.perf_counter()
            r = await client.post("/api/v1/events", json={"events": [event]}, headers=auth)
            r.raise_for_status()
            await asyncio.sleep(1.0)

    async def run(seat_agents) -> dict:
        sent.clear()
        arrived.clear()
        stop.clear()
        limits = httpx.Limits(max_connections=len(seat_agents) + 10)
        async with httpx.AsyncClient(base_url=server.url, cookies=cookies, limits=limits,
                                     timeout=30) as client:
            page = asyncio.create_task(teacher_page(client))
            await asyncio.sleep(1.5)
            already = dict(counts)
            sent.clear()
            arrived.clear()
            seats = [asyncio.create_task(seat(client, name, token, i / len(seat_agents), already.get(name,
                                                                                                     0)))
                     for i, (name, token) in enumerate(seat_agents)]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.sleep(3.0)  # the last events arrive
            for task in (*seats, page):
                task.cancel()
        latencies = [arrived[key] - t for key, t in sent.items() if key in arrived]
        return {**stats(latencies), "sent": len(sent), "never_shown": len(sent) - len(latencies)}

    one = await run(agents[:1])
    many = await run(agents)
    return {"one_seat": one, "all_seats": many}


# ----------------------------------------------------------------------------- page weight


def page_weight(server, lesson_id: str) -> dict:
    cookies, _ = login_cookies(server, *TEACHER)
    admin_cookies, _ = login_cookies(server, *ADMIN)
    with server.client(cookies=cookies) as c:
        html = c.get(f"/lessons/{lesson_id}?lang=ky").content
        assets = {path: len(c.get(path).content) for path in
                  ("/static/kalkan.css", "/static/lessons.css", "/static/htmx.min.js", "/static/htmx-sse.js")}
    with server.client(cookies=admin_cookies) as c:
        incidents = len(c.get("/incidents?lang=ky").content) + len(c.get("/static/kalkan.css").content)
    total = len(html) + sum(assets.values())
    return {"lesson_page_html": len(html), **assets, "lesson_page_total": total,
            "baseline_incidents_page_total": incidents, "fonts": b"@font-face" in html}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seats", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "lessons" / "last-run.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lesson-bench-") as state:
        server = KalkanServerProcess(Path(state), tls=False).start()
        try:
            agents = setup(server, args.seats)
            start = asyncio.run(lesson_start(server, agents))
            events = asyncio.run(seat_events(server, agents, start["lesson_id"], args.seconds))
            weight = page_weight(server, start["lesson_id"])
        finally:
            server.stop()
    result = {"machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
              "cpus": __import__("os").cpu_count(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "seats": args.seats, "seconds": args.seconds, "lesson_start": start, "seat_events": events,
              "page_weight": weight,
              "ratios": {
                  "seat_event_p95_all_vs_one": round(events["all_seats"]["p95_ms"]
                                                     / max(events["one_seat"]["p95_ms"], 0.1), 2),
                  "seat_event_p95_vs_goal_1s": round(events["all_seats"]["p95_ms"] / 1000, 2),
                  "lesson_start_p95_vs_policy_change_p95": round(
                      start["lesson_start"]["p95_ms"] / max(start["baseline_policy_change"]["p95_ms"],
                                                            0.1), 2),
                  "lesson_start_p95_vs_goal_2s": round(start["lesson_start"]["p95_ms"] / 2000, 2),
                  "page_total_vs_goal_100kb": round(weight["lesson_page_total"] / 102400, 2),
                  "page_total_vs_incidents_page": round(weight["lesson_page_total"]
                                                        / weight["baseline_incidents_page_total"], 2)}}
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
