"""Kalkan vs bare mitmdump, interleaved A/B: the throughput ratio that issue 4 asks for (≥ 0.97).

    sudo .venv/bin/python benchmarks/proxy/ab.py [--pairs 10] [--seconds 3] [--loads plain,connect,tls]

Why this exists next to run.py: on a shared 2-core machine, rounds of 6 s measured one proxy after
the other swing ±0.1 in their ratio, which cannot tell 0.92 from 0.97.  Here:

* both proxies run all the time; the load alternates between them in short slices, in ABBA order
  (pair i: Kalkan then bare if i is even, bare then Kalkan if odd), so a trend in the machine's
  load hits both alike;
* the same warm-up slice for each before the first pair; nothing is pinned to a core;
* each pair gives a ratio (Kalkan / bare req/s); we report the median and the spread (min–max,
  interquartile) of the per-pair ratios;
* and the proxy's own CPU time per request: the sum of every thread's on-CPU nanoseconds
  (/proc/<pid>/task/*/schedstat, the precise form of utime+stime in /proc/<pid>/stat) before and
  after the slice, divided by the requests served.  Other work on the machine makes a request
  *wait* longer but hardly makes it *cost* more CPU, so this ratio is far steadier than req/s; a
  throughput ratio of 0.97 corresponds to a cost ratio of 1/0.97 = 1.031.

Loads (all on loopback, run as the teacher account so the addon makes real decisions with the UT1
index; the load generators are those of run.py):
* plain: wrk -t2 -c16, absolute-form GET through the proxy to a local origin;
* connect: new connection + CONNECT + TLS to the origin + one request; Kalkan passes it through
  (an allowed host, decided at the ClientHello), bare by `ignore_hosts`;
* tls: the same to a host both intercept (Kalkan decides at the ClientHello that it intercepts).

`--gc` also times every proxy's cyclic garbage collections (gc_meter.py, loaded into each variant
alike) and prints their CPU per request: a cost far below what the CPU ratio can resolve here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import CONNECT_LOAD, WRK_LUA, bare_proxy, compile_index, profile_args  # noqa: E402

from tests.proxy.conftest import FAKE_HOSTS, TEACHER, _account, base_bundle, upstream_for  # noqa: E402
from tests.support.proxy_rig import launch_of, make_ca, start_origin, start_proxy  # noqa: E402


def cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of `pid` and of its live children (Kalkan's splice pump
    process), in ns (schedstat's first field)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between listing and reading
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(cpu_ns(int(child)) for child in children)


@dataclass
class Slice:
    requests: int
    seconds: float
    cpu_s: float
    gc_s: float | None = None  # the cyclic GC's share of cpu_s (`--gc`)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6


@dataclass
class Series:
    slices: dict[str, list[Slice]] = field(default_factory=dict)  # variant → one slice per round
    loads: list[float] = field(default_factory=list)


def run_wrk(account, port: int, seconds: int, script: Path) -> tuple[int, float]:
    out = account.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script),
                       f"http://127.0.0.1:{port}"]).stdout
    for line in out.splitlines():
        if "requests in" in line:  # "  12345 requests in 3.00s, 1.2MB read"
            parts = line.split()
            return int(parts[0]), float(parts[3].rstrip("s,"))
    raise RuntimeError(f"wrk said: {out}")


def run_connect(account, port: int, seconds: float, host: str, cafile: Path,
                script: Path) -> tuple[int, float]:
    out = account.run(["/usr/bin/python3", str(script), str(port), host, str(seconds), str(cafile)])
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1500:])
    done, elapsed = out.stdout.split()
    return int(done), float(elapsed)


GC_METER = Path(__file__).resolve().parent / "gc_meter.py"


def gc_args(out: Path | None) -> list[str]:
    """mitmdump arguments that time its garbage collections into `out` (nothing when None)."""
    return ["-s", str(GC_METER), "--set", f"bench_gc={out}"] if out else []


def gc_cpu_ns(pid: int, out: Path) -> int:
    """The GC's CPU time so far in `pid` (gc_meter.py writes its totals on SIGUSR1)."""
    seq = json.loads(out.read_text())["seq"] if out.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data = json.loads(out.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {"seq": seq}
        if data["seq"] > seq:
            return sum(ns for _, ns in data["gens"].values())
        time.sleep(0.002)
    raise RuntimeError(f"no GC totals from {pid} in {out}")


def measure(pid: int, load, gc_file: Path | None = None) -> Slice:
    gc_before = gc_cpu_ns(pid, gc_file) if gc_file else 0
    before = cpu_ns(pid)
    requests, seconds = load()
    cpu_s = (cpu_ns(pid) - before) / 1e9
    gc_s = (gc_cpu_ns(pid, gc_file) - gc_before) / 1e9 if gc_file else None
    return Slice(requests, seconds, cpu_s, gc_s)


@dataclass
class Running:
    proc: subprocess.Popen
    port: int
    tls_ca: Path  # the CA the intercepted-TLS load trusts for this proxy
    gc_file: Path | None = None  # gc_meter.py's totals (`--gc`)


def stop_all(running: dict[str, Running]) -> None:
    for proxy in running.values():
        if proxy.proc.poll() is None:
            proxy.proc.terminate()
            try:
                proxy.proc.wait(10)
            except subprocess.TimeoutExpired:
                proxy.proc.kill()
                proxy.proc.wait(5)


def start_spies(running: dict[str, Running], folder: Path) -> list[subprocess.Popen]:
    folder.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).parent / "py-spy")
    spies = [subprocess.Popen([py_spy, "record", "--pid", str(proxy.proc.pid),
                               "--rate", "250", "--format", "raw", "--nonblocking",
                               "-o", str(folder / f"{variant}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for variant, proxy in running.items()]
    time.sleep(1)
    return spies


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summary(name: str, variant: str, series: Series) -> list[str]:
    """Table rows of one Kalkan variant against bare mitmdump, from the per-round ratios."""
    mine, bare = series.slices[variant], series.slices["bare"]
    rate_ratios = [k.rate / b.rate for k, b in zip(mine, bare, strict=True)]
    cost_ratios = [k.cpu_us_per_request / b.cpu_us_per_request for k, b in zip(mine, bare, strict=True)]
    r1, r2, r3 = quartiles(rate_ratios)
    c1, c2, c3 = quartiles(cost_ratios)
    k_rate = statistics.median(s.rate for s in mine)
    b_rate = statistics.median(s.rate for s in bare)
    k_cost = statistics.median(s.cpu_us_per_request for s in mine)
    b_cost = statistics.median(s.cpu_us_per_request for s in bare)
    met_rate = "yes" if r2 >= 0.97 else "**no**"
    met_cost = "yes" if 1 / c2 >= 0.97 else "**no**"
    return [
        f"| {name}, {variant}: req/s | {k_rate:.0f} | {b_rate:.0f} | **{r2:.3f}** | {r1:.3f}–{r3:.3f} | "
        f"{min(rate_ratios):.3f}–{max(rate_ratios):.3f} | ≥ 0.97 | {met_rate} |",
        f"| {name}, {variant}: proxy CPU µs/request | {k_cost:.0f} | {b_cost:.0f} | **{c2:.3f}** "
        f"(→ {1 / c2:.3f}) | {c1:.3f}–{c3:.3f} | {min(cost_ratios):.3f}–{max(cost_ratios):.3f} | "
        f"≤ 1.031 (≥ 0.97) | {met_cost} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=3,
                        help="length of one slice (wrk takes whole seconds)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loads", default="plain,connect,tls")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for cProfile dumps of both mitmdumps (kalkan.prof, bare.prof)")
    parser.add_argument("--py-spy", type=Path, default=None, dest="py_spy",
                        help="folder for py-spy sampling profiles of both mitmdumps over all the slices "
                             "(kalkan.txt, bare.txt: collapsed stacks; summarise with spy_top.py)")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout of an older Kalkan (e.g. `git archive <commit> | tar -x -C DIR`): "
                             "its addon runs as a third variant, 'before', in the same rounds")
    parser.add_argument("--restart-every", type=int, default=2,
                        help="start fresh proxy processes every N rounds (0: never).  One process can be "
                             "a few per cent faster or slower than another for its whole life (where its "
                             "memory and threads land), so each variant is measured in several processes")
    parser.add_argument("--aa", action="store_true",
                        help="add a second bare mitmdump ('bare2'): the A/A control shows the noise floor")
    parser.add_argument("--gc", action="store_true",
                        help="time every proxy's cyclic garbage collections (gc_meter.py, loaded into "
                             "each variant alike) and report their CPU per request")
    parser.add_argument("--index", type=Path, default=None,
                        help="an already compiled UT1 index (else compiled from ../shared/data/ut1)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the load generator runs as a real teacher account")
    loads = [name.strip() for name in args.loads.split(",") if name.strip()]
    unknown = set(loads) - {"plain", "connect", "tls"}
    if unknown:
        sys.exit(f"--loads: unknown {sorted(unknown)}; use plain, connect, tls")
    teacher = _account(TEACHER)
    tmp = Path(tempfile.mkdtemp(prefix="kalkan-ab-"))
    tmp.chmod(0o755)
    index = args.index or compile_index(tmp / "ut1.idx")
    origin = start_origin(FAKE_HOSTS, tmp)
    for server in origin.servers:  # wrk drops its connections at the end of a slice: not an error
        server.handle_error = lambda request, address: None
    origin_ca = tmp / "origin-ca.pem"
    school = make_ca("Bench School CA")
    school_ca = tmp / "school-ca.pem"
    school_ca.write_text(school.cert_pem)
    upstream = upstream_for(origin)
    if (args.profile or args.py_spy) and args.restart_every:
        sys.exit("--profile and --py-spy follow one process each: use them with --restart-every 0")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    ip_host = f"127.0.0.1:{origin.http_port}"
    # the plain load asks the origin's own port: a port the proxy may connect to (network.proxy_ports)
    bundle = base_bundle()
    bundle = bundle.model_copy(update={"network": bundle.network.model_copy(
        update={"proxy_ports": [80, 443, origin.http_port]})})
    wrk_script = tmp / "abs.lua"
    wrk_script.write_text(WRK_LUA.format(url=f"http://{ip_host}/", host=ip_host))
    connect_script = tmp / "connect_load.py"
    connect_script.write_text(CONNECT_LOAD)
    for path in (wrk_script, connect_script):
        path.chmod(0o644)
    generation = 0

    def start_variants() -> dict[str, Running]:
        """A fresh process of every variant (a new state dir each time)."""
        nonlocal generation
        generation += 1
        here = tmp / f"gen{generation}"
        here.mkdir()
        def gc_file(variant: str) -> Path | None:
            return here / f"{variant}.gc.json" if args.gc else None

        kalkan = start_proxy(here / "kalkan", school_ca=school, upstream=upstream, bundle=bundle,
                             upstream_ca=origin_ca,
                             extra=["--set", f"kalkan_index={index}", *gc_args(gc_file("kalkan")),
                                    *profile_args(args.profile / "kalkan.prof" if args.profile else None)])
        running = {"kalkan": Running(kalkan.proc, kalkan.port, school_ca, gc_file("kalkan"))}
        if args.before:
            import tests.support.proxy_rig as rig

            entry, rig.ENTRY = rig.ENTRY, args.before / "agent" / "proxy" / "mitm_entry.py"
            try:
                before = start_proxy(here / "before", school_ca=school, upstream=upstream,
                                     bundle=bundle, upstream_ca=origin_ca,
                                     extra=["--set", f"kalkan_index={index}", *gc_args(gc_file("before"))],
                                     launch=launch_of(args.before))
            finally:
                rig.ENTRY = entry
            running["before"] = Running(before.proc, before.port, school_ca, gc_file("before"))
        bare, bare_port = bare_proxy(here / "bare", upstream, origin_ca,
                                     args.profile / "bare.prof" if args.profile else None,
                                     gc_args(gc_file("bare")))
        running["bare"] = Running(bare, bare_port, here / "bare" / "mitmproxy-ca-cert.pem", gc_file("bare"))
        if args.aa:
            bare2, bare2_port = bare_proxy(here / "bare2", upstream, origin_ca, None,
                                           gc_args(gc_file("bare2")))
            running["bare2"] = Running(bare2, bare2_port, here / "bare2" / "mitmproxy-ca-cert.pem",
                                       gc_file("bare2"))
        return running

    def load_for(name: str, proxy: Running, seconds: int):
        if name == "plain":
            return lambda: run_wrk(teacher, proxy.port, seconds, wrk_script)
        host, cafile = ("news.test", origin_ca) if name == "connect" else ("www.google.com", proxy.tls_ca)
        return lambda: run_connect(teacher, proxy.port, seconds, host, cafile, connect_script)

    results: dict[str, Series] = {}
    spies: list[subprocess.Popen] = []
    running: dict[str, Running] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        for name in loads:
            series = results[name] = Series()
            for i in range(args.pairs):
                if not running or (args.restart_every and i % args.restart_every == 0):
                    stop_all(running)
                    running = start_variants()
                    if args.py_spy and not spies:
                        spies = start_spies(running, args.py_spy)
                    for proxy in running.values():  # the same warm-up for each
                        measure(proxy.proc.pid, load_for(name, proxy, args.warmup), proxy.gc_file)
                series.loads.append(os.getloadavg()[0])
                order = list(running) if i % 2 == 0 else list(reversed(running))  # ABBA (ABC CBA)
                for variant in order:
                    proxy = running[variant]
                    slice_ = measure(proxy.proc.pid, load_for(name, proxy, args.seconds), proxy.gc_file)
                    series.slices.setdefault(variant, []).append(slice_)
            series.loads.append(os.getloadavg()[0])
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        stop_all(running)
        origin.close()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    print(f"machine: nproc={os.cpu_count()}, CPU {cpu}; started {started}; {args.pairs} ABBA rounds of "
          f"{args.seconds:g} s slices per load and variant, warm-up {args.warmup:g} s each")
    print()
    print("| load: measure | Kalkan (median) | bare (median) | ratio, median of pairs | interquartile | "
          "min–max | goal | met? |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, series in results.items():
        for variant in series.slices:
            if variant != "bare":
                for line in summary(name, variant, series):
                    print(line)
    print()
    for name, series in results.items():
        print(f"{name}: 1-min load average during the rounds: {', '.join(f'{v:.1f}' for v in series.loads)}")
        bare = series.slices["bare"]
        for variant, slices in series.slices.items():
            print(f"  {variant:7s} req/s: {', '.join(f'{s.rate:.0f}' for s in slices)}; CPU µs/request: "
                  f"{', '.join(f'{s.cpu_us_per_request:.0f}' for s in slices)}; "
                  f"{sum(s.requests for s in slices)} requests, {sum(s.cpu_s for s in slices):.1f} CPU s")
            if args.gc:
                gc_us = [s.gc_s / s.requests * 1e6 for s in slices]
                gc_share = statistics.median(s.gc_s / s.cpu_s for s in slices)
                print(f"    GC CPU µs/request: {', '.join(f'{v:.1f}' for v in gc_us)}; median "
                      f"{statistics.median(gc_us):.1f} = {gc_share:.1%} of the proxy's CPU")
            if variant != "bare":
                pairs = list(zip(slices, bare, strict=True))
                print(f"    / bare, req/s: {', '.join(f'{k.rate / b.rate:.3f}' for k, b in pairs)}")
                print("    / bare, CPU cost: " + ", ".join(
                    f"{k.cpu_us_per_request / b.cpu_us_per_request:.3f}" for k, b in pairs))


if __name__ == "__main__":
    main()
