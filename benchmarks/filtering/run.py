"""Benchmarks of filtering run from the console (issue 12).  Writes RESULTS-style lines.

    .venv/bin/python benchmarks/filtering/run.py build  [--ut1 ../shared/data/ut1]
    .venv/bin/python benchmarks/filtering/run.py fetch  [--ut1 ../shared/data/ut1] [--synthetic 4000000]
    .venv/bin/python benchmarks/filtering/run.py push   [--seats 30] [--changes 10]

* build: `kalkan-server lists update` (tarball → verify → unpack → compile → compare with the
  index before → publish) against the baseline `kalkan-filter compile` of the same folder
  (compile only), same run.  Size of the published index.
* fetch: a real server process publishes the index; `agent.artifacts.ArtifactFetcher`
  downloads it over the pinned TLS channel, hashes it, verifies it and swaps it in; baseline:
  `shutil.copyfile` of the same file plus the same `verify` (what copying it onto the seat by
  hand costs), same run.
* push: `--seats` real `kalkan-agent run` processes enrolled to one real server; each change
  is the console's "Save" (`POST /filtering/policy/apply`, the responsible person logged in:
  `amend_policy` in the server, pushed at commit); the time until each
  seat has written the new `policy.json` (the proxy re-reads it within its 0.25 s watch
  interval, added to the "enforced" column); baseline: the same with one seat, same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.agent_process import AgentProcess  # noqa: E402
from tests.support.server import KalkanServerProcess  # noqa: E402

WATCH_S = 0.25  # agent/proxy/watch.py POLL_S: the proxy re-reads policy.json at most this late


def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    load = os.getloadavg()[0]
    return (
        f"machine: nproc={os.cpu_count()}, {cpu}, Python {platform.python_version()}, "
        f"load average {load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def default_ut1() -> Path:
    return Path(os.environ.get("KALKAN_UT1_DIR") or REPO.parent / "shared" / "data" / "ut1")


def tarball_of(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname="blacklists")
    return out


def cmd_build(args) -> None:
    ut1 = Path(args.ut1)
    if not ut1.is_dir():
        print(f"no UT1 folder at {ut1}; give --ut1 (the full lists are not in the repository)")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    tarball = tarball_of(ut1, work / "ut1.tar.gz")
    t0 = time.perf_counter()
    base = subprocess.run(
        [
            sys.executable,
            "-m",
            "filters.cli",
            "compile",
            "-o",
            str(work / "base.kidx"),
            "--ut1",
            str(ut1),
            "--progress",
            "never",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    baseline_s = time.perf_counter() - t0
    assert base.returncode == 0, base.stderr
    state = work / "server"
    runs = []
    for source in (tarball, tarball):  # the second run compares against the first and publishes nothing
        t0 = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "policy_server.cli",
                "lists",
                "update",
                "--source",
                str(source),
                "--state-dir",
                str(state),
                "--json",
                "--force",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        runs.append(time.perf_counter() - t0)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
    print(machine())
    print(f"lists: {ut1} ({tarball.stat().st_size:,} bytes as tarball)")
    print("| step | seconds | ratio to compile only |\n| --- | --- | --- |")
    print(f"| `kalkan-filter compile` (baseline, compile only) | {baseline_s:.2f} | 1.00 |")
    print(
        f"| `lists update`, first (unpack, compile, publish) | {runs[0]:.2f} | {runs[0] / baseline_s:.2f} |"
    )
    print(
        f"| `lists update`, second (+ compare with the index before) | {runs[1]:.2f} | "
        f"{runs[1] / baseline_s:.2f} |"
    )
    print(
        f"published index: {result['entries']:,} keys, {result['size']:,} bytes "
        f"({result['size'] / result['entries']:.2f} B/key)"
    )
    shutil.rmtree(work, ignore_errors=True)


def _synthetic_index(path: Path, n: int) -> None:
    from filters.importers import Entry
    from filters.index import compile_index

    compile_index([(Entry(f"host{i}.synthetic{i % 997}.example", None, ("games",)) for i in range(n))], path)


def cmd_fetch(args) -> None:
    from agent.artifacts import ArtifactFetcher
    from agent.server_client import ServerClient
    from filters.index import CategoryIndex

    work = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    server = KalkanServerProcess(work / "server").start()
    try:
        sources = []
        ut1 = Path(args.ut1)
        if ut1.is_dir():
            sources.append(("UT1 copy", ["--source", str(ut1)]))
        print(machine())
        print("| index | bytes | agent fetch + verify + swap (s) | copy + verify (s) | ratio |")
        print("| --- | --- | --- | --- | --- |")
        cases = []
        if ut1.is_dir():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "policy_server.cli",
                    "lists",
                    "update",
                    "--source",
                    str(ut1),
                    "--state-dir",
                    str(server.state_dir),
                ],
                check=True,
                capture_output=True,
                cwd=REPO,
            )
            with server.db() as db:
                from policy_server.policies.service import current_bundle

                cases.append(("UT1 (this copy)", current_bundle(db).filtering.index_sha256))
        if args.synthetic:
            from policy_server.filtering.lists import artifact_path
            from policy_server.filtering.models import FilterIndexArtifact

            tmp = work / "synthetic.kidx"
            _synthetic_index(tmp, args.synthetic)
            sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
            shutil.move(tmp, artifact_path(server.state_dir, sha))
            with server.db() as db:
                db.add(
                    FilterIndexArtifact(
                        sha256=sha,
                        body_sha256="-",
                        size=artifact_path(server.state_dir, sha).stat().st_size,
                        entries=args.synthetic,
                        created_by="bench",
                        source="synthetic",
                        build_seconds=0,
                        counts={},
                        changes={},
                    )
                )
                db.commit()
            cases.append((f"{args.synthetic:,} synthetic domains", sha))
        agent_id, token = server.enroll("bench-pc", seat="bench")
        for name, sha in cases:
            fetch_times, copy_times = [], []
            src = server.state_dir / "lists" / f"{sha}.kidx"
            for _ in range(args.repeat):
                seat = work / f"seat-{time.monotonic_ns()}"
                client = ServerClient(server.url, token=token, sha256=server.fingerprint)
                fetcher = ArtifactFetcher(seat, client)
                t0 = time.perf_counter()
                assert fetcher.ensure_index(sha), fetcher.last_error
                fetch_times.append(time.perf_counter() - t0)
                client.close()
                t0 = time.perf_counter()
                shutil.copyfile(src, work / "copy.kidx")
                CategoryIndex.open(work / "copy.kidx", verify=True).close()
                copy_times.append(time.perf_counter() - t0)
                shutil.rmtree(seat, ignore_errors=True)
            f, c = statistics.median(fetch_times), statistics.median(copy_times)
            print(f"| {name} | {src.stat().st_size:,} | {f:.3f} | {c:.3f} | {f / c:.1f} |")
        print(f"(medians of {args.repeat} runs each; fetch = HTTPS on 127.0.0.1 with the pinned certificate)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _push_round(server: KalkanServerProcess, agents: list[AgentProcess], changes: int) -> list[float]:
    """Each change is the console's "Save" (POST /filtering/policy/apply as the responsible
    person): amend_policy inside the server process, pushed at commit."""
    import httpx

    with server.client() as c:
        r = c.post("/api/v1/login", json={"username": "bench-admin", "password": "bench-password-1"})
        r.raise_for_status()
        csrf, cookies = r.json()["csrf_token"], dict(c.cookies)
    delays: list[float] = []
    with httpx.Client(base_url=server.url, verify=server.verify, cookies=cookies, timeout=30) as console:
        for i in range(changes):
            entry = f"bench-{i}-{time.time_ns()}.example.kg"
            t0 = time.monotonic()
            r = console.post(
                "/filtering/policy/apply",
                data={"csrf_token": csrf, "kind": "list", "list": "block_list", "entries": entry},
            )
            assert r.status_code == 303, r.text[:500]
            pending = {a.state_dir for a in agents}
            seen: dict[Path, float] = {}
            while pending and time.monotonic() - t0 < 15:
                for path in list(pending):
                    try:
                        text = (path / "policy.json").read_text()
                    except OSError:
                        continue
                    if entry in text:
                        seen[path] = time.monotonic() - t0
                        pending.discard(path)
                time.sleep(0.01)
            if pending:
                raise RuntimeError(f"{len(pending)} seats did not get change {i} within 15 s")
            delays += list(seen.values())
            time.sleep(0.3)
    return delays


def cmd_push_threads(args) -> None:
    """The same measurement with the seats' real policy code (PolicyManager: push channel,
    fetch, hash check, policy.json written) as threads of one process: the seats' own CPU
    is then one process, not 30 interpreters on the server's 2 cores."""
    from agent.policy import PolicyManager
    from agent.server_client import ServerClient
    from agent.state import AgentState

    work = Path(tempfile.mkdtemp(prefix="bench-pusht-"))
    server = KalkanServerProcess(work / "server").start()
    server.create_user("admin", "bench-admin", "bench-password-1")
    stop = threading.Event()
    clients = []
    try:
        seats = []
        for i in range(args.seats):
            _agent_id, token = server.enroll(f"pc-{i:02d}", seat=f"seat-{i:02d}")
            state = AgentState(work / f"seat-{i:02d}")
            state.paths.ensure()
            client = ServerClient(server.url, token=token, sha256=server.fingerprint)
            clients.append(client)
            manager = PolicyManager(state, on_apply=lambda bundle: None)
            seats.append(SimpleNamespace(state_dir=state.paths.root))
            threading.Thread(target=manager.run_push, args=(client, stop), daemon=True).start()
        time.sleep(3)
        one = _push_round(server, seats[:1], args.changes)
        many = _push_round(server, seats, args.changes)
        print(machine())
        print(
            f"seats as threads of one process (agent.policy.PolicyManager, real HTTPS, pinned); "
            f"{args.changes} changes"
        )
        print("| seats | samples | p50 applied (s) | p95 applied (s) | max (s) | p95 enforced ≤ (s) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for n, d in ((1, one), (args.seats, many)):
            print(
                f"| {n} (of {args.seats} listening) | {len(d)} | {statistics.median(d):.3f} | "
                f"{_p95(d):.3f} | "
                f"{max(d):.3f} | {_p95(d) + WATCH_S:.3f} |"
            )
    finally:
        stop.set()
        for client in clients:
            client.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _settle(pids: list[int], *, below: float = 0.15, longest_s: float = 60.0) -> float:
    """Wait until the agents' start-up work is done (their CPU use under `below` cores over a
    second), so the measurement is the change, not start-up contention; the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < longest_s:
        before = _cpu_s(pids)
        time.sleep(1.0)
        if _cpu_s(pids) - before < below:
            break
    return time.monotonic() - t0


def _push_run(args, inline: bool) -> dict:
    """One server and `args.seats` real `kalkan-agent run` processes; `inline` = the push carries
    the room's bundle (KALKAN_PUSH_INLINE=1, now) or only the version (=0, before: every seat
    then GETs /api/v1/policy)."""
    os.environ["KALKAN_PUSH_INLINE"] = "1" if inline else "0"
    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    server = KalkanServerProcess(work / "server").start()
    server.create_user("admin", "bench-admin", "bench-password-1")
    code_agents: list[AgentProcess] = []
    try:
        for i in range(args.seats):
            agent = AgentProcess(work / f"seat-{i:02d}")
            agent.enroll(server, seat=f"seat-{i:02d}")
            code_agents.append(agent)
        # baseline: one seat alone
        code_agents[0].start(collectors=["heartbeat"], heartbeat_s=60)
        _settle([code_agents[0].proc.pid])
        one = _push_round(server, code_agents[:1], args.changes)
        for agent in code_agents[1:]:  # one after the other: 29 starting at once starve 2 cores
            agent.start(collectors=["heartbeat"], heartbeat_s=60, timeout=120)
        pids = [a.proc.pid for a in code_agents]
        settled = _settle(pids)
        load = os.getloadavg()[0]
        server_cpu, agents_cpu = _cpu_s([server.proc.pid]), _cpu_s(pids)
        try:
            many = _push_round(server, code_agents, args.changes)
        except RuntimeError as exc:
            raise RuntimeError(f"{'inline' if inline else 'notice + GET'}: {exc}; server log tail:\n"
                               f"{server.log_text()[-3000:] if hasattr(server, 'log_text') else ''}\n"
                               f"seat-00 log tail:\n{code_agents[0].log_text()[-2000:]}") from None
        server_cpu = _cpu_s([server.proc.pid]) - server_cpu
        agents_cpu = _cpu_s(pids) - agents_cpu
        return {"one": one, "many": many, "load": load, "settled": settled,
                "server_cpu": server_cpu / args.changes, "agents_cpu": agents_cpu / args.changes}
    finally:
        for agent in code_agents:
            if agent.running:
                agent.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def cmd_push(args) -> None:
    """Policy change → applied on 30 real agent processes, before (the push says "version N",
    each seat GETs it) and now (the push carries the room's bundle) in one run."""
    runs = []
    for inline in (False, True):
        runs.append((inline, _push_run(args, inline)))
    print(machine())
    print(
        f"{args.changes} policy changes; seat applied = new policy.json written; enforced ≤ applied + "
        f"{WATCH_S} s (the proxy's watch interval); CPU = seconds per change (server / all agents); "
        f"load = 1-min load average when the 30-seat round began"
    )
    print(
        "| path | seats | samples | p50 applied (s) | p95 applied (s) | max (s) | p95 enforced ≤ (s) "
        "| server CPU (s) | agents' CPU (s) | load |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for inline, r in runs:
        name = "bundle in the push (now)" if inline else "notice + GET (before)"
        for n, d in ((1, r["one"]), (args.seats, r["many"])):
            cpu = f"{r['server_cpu']:.3f} | {r['agents_cpu']:.3f} | {r['load']:.1f}" if n > 1 else "| |"
            print(
                f"| {name} | {n} | {len(d)} | {statistics.median(d):.3f} | {_p95(d):.3f} | {max(d):.3f} | "
                f"{_p95(d) + WATCH_S:.3f} | {cpu} |"
            )
    before, now = runs[0][1]["many"], runs[1][1]["many"]
    print(f"30-seat p95 ratio now/before: {_p95(now) / _p95(before):.2f}; "
          f"p50 ratio: {statistics.median(now) / statistics.median(before):.2f}; "
          f"settled after start: {runs[0][1]['settled']:.0f} s / {runs[1][1]['settled']:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--ut1", default=str(default_ut1()))
    f = sub.add_parser("fetch")
    f.add_argument("--ut1", default=str(default_ut1()))
    f.add_argument("--synthetic", type=int, default=0)
    f.add_argument("--repeat", type=int, default=3)
    p = sub.add_parser("push")
    p.add_argument("--seats", type=int, default=30)
    p.add_argument("--changes", type=int, default=10)
    t = sub.add_parser("push-threads")
    t.add_argument("--seats", type=int, default=30)
    t.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    {"build": cmd_build, "fetch": cmd_fetch, "push": cmd_push, "push-threads": cmd_push_threads}[args.cmd](
        args
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
