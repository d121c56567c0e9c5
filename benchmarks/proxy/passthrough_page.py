"""Added latency of HTTPS passed through, per page: Kalkan vs bare mitmdump vs E2Guardian, one run.

    sudo .venv/bin/python benchmarks/proxy/passthrough_page.py [--pages 60] [--objects 20] [--variants ...]

Variants: `kalkan` (as shipped: the front listener, agent/proxy/front.py, with its early dial,
and the kernel relay, agent/proxy/kernel_relay.py), `kalkan_process` / `kalkan_thread` /
`kalkan_asyncio` (the front with the splice pump process / the pump as a thread / asyncio as the
relay), `kalkan_no_front` (accepted by mitmproxy, decided in the addon's `next_layer`, kernel
relay), `kalkan_no_front_process` (the same with the pump process: the shipped default before),
`kalkan_mitm_connect` (no front, CONNECT through mitmproxy's HTTP layer), `kalkan_mitm_relay`
(mitmproxy's own relay), `kalkan_asyncio_loop` (as shipped, but mitmdump on asyncio's own event
loop instead of uvloop), `bare` (mitmdump with `ignore_hosts`), `e2guardian`; `--before DIR`
adds an older checkout.  CPU per page counts the proxy's threads and children (the pump, E2Guardian's
forks).

One "page" = a new connection to the proxy, `CONNECT`, a TLS handshake with the origin through the
tunnel (the proxy passes it through untouched: Kalkan decides at the ClientHello, bare mitmdump by
`ignore_hosts`, E2Guardian tunnels CONNECT), then `--objects` requests one after the other over
that keep-alive connection (a page and its parts).  The same page straight to the origin is the
baseline; "added" = the proxy's page time − the direct page time of the same round.  Rounds are
interleaved (direct and each proxy, each round in a seeded random order, never one variant twice
in a row), so a busy machine hits every variant alike and none finds its caches warm from its
own page before (the alternating order used until 2026-12-05 gave the last variant of the list
half its pages right after one of its own: ~0.15 ms and ~0.15 ms of CPU per page better in an
A/A run of the same code).
The client runs as the teacher account (a person: Kalkan decides, and passes news.test through).

E2Guardian is asked `CONNECT 127.0.0.1:<port>` (it resolves names itself and knows no test
names); Kalkan and bare mitmdump `CONNECT news.test:443`, which their test mapping sends to the
same origin.  The TLS server name is news.test for every variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab import cpu_ns  # noqa: E402
from e2guardian_rig import start_e2guardian, stop_e2guardian  # noqa: E402
from nginx_origin import NginxOrigin  # noqa: E402
from run import bare_proxy  # noqa: E402

from tests.proxy.conftest import FAKE_HOSTS, TEACHER, _account, base_bundle, upstream_for  # noqa: E402
from tests.support.proxy_rig import MITMDUMP, launch_of, make_ca, start_origin, start_proxy  # noqa: E402

CLIENT = r"""
import json, socket, ssl, sys, time
spec = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=spec["cafile"])
out = {}

def page(proxy_port, target):
    t = time.perf_counter()
    if proxy_port:
        sock = socket.create_connection(("127.0.0.1", proxy_port))
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"), head
    else:
        sock = socket.create_connection(("127.0.0.1", spec["https_port"]))
    answered = time.perf_counter()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tls = ctx.wrap_socket(sock, server_hostname="news.test")
    shaken = time.perf_counter()
    reader = tls.makefile("rb")
    for i in range(spec["objects"]):
        tls.sendall(f"GET /obj{i} HTTP/1.1\r\nHost: news.test\r\n\r\n".encode())
        length = None
        while True:
            line = reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        reader.read(length)
    end = time.perf_counter()
    reader.close()
    tls.close()
    return end - t, answered - t, shaken - answered, end - shaken

import random
order = random.Random(20261205)
last = None
for rnd in range(spec["pages"]):
    # each round in its own (seeded) random order, never starting with the variant that ended the
    # round before: no variant runs twice in a row (a page right after one of its own finds its
    # caches warm) and each follows every other about equally often
    variants = list(spec["variants"])
    order.shuffle(variants)
    if variants[0] == last:
        variants.append(variants.pop(0))
    last = variants[-1]
    for name in variants:
        port, target = spec["proxies"].get(name, (None, None))
        out.setdefault(name, []).append(page(port, target))
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--variants", default="kalkan,kalkan_mitm_relay,bare,e2guardian")
    parser.add_argument(
        "--ut1",
        type=Path,
        default=Path("/work/shared/data/ut1"),
        help="UT1 lists for E2Guardian's banned sites (as in run.py)",
    )
    parser.add_argument("--index", type=Path, default=None, help="compiled UT1 index for Kalkan")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a checkout of an older Kalkan: its addon runs as the variant 'before'",
    )
    parser.add_argument(
        "--kalkan-extra", default="", help="extra mitmdump arguments for Kalkan (space separated)"
    )
    parser.add_argument("--origin", choices=("python", "nginx"), default="python",
                        help="the origin server: the test rig's Python one (as before) or nginx "
                             "(nginx_origin.py says why)")
    parser.add_argument("--phases", action="store_true",
                        help="also print each page's phases, medians: connected (and the CONNECT "
                             "answered) / the TLS handshake through the tunnel / the objects")
    parser.add_argument("--spy", type=Path, default=None,
                        help="record each proxy with py-spy (collapsed stacks) into this folder "
                             "(summarise with spy_top.py)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the client runs as a real teacher account")
    variants = [v for v in args.variants.split(",") if v]
    if args.before and "before" not in variants:
        variants.append("before")
    teacher = _account(TEACHER)
    tmp = Path(tempfile.mkdtemp(prefix="kalkan-page-"))
    tmp.chmod(0o755)
    origin = start_origin(FAKE_HOSTS, tmp)
    origin_ca = tmp / "origin-ca.pem"
    origin_ca.chmod(0o644)
    served = None
    if args.origin == "nginx":  # the same certificate, served by nginx: every variant goes there
        served = NginxOrigin(tmp)
        origin = dataclasses.replace(origin, https_port=served.https_port)
    upstream = upstream_for(origin)
    school = make_ca("Bench School CA")
    procs: dict[str, object] = {}
    proxies: dict[str, tuple[int, str]] = {}
    e2g = None
    try:
        extra = ["--set", f"kalkan_index={args.index}"] if args.index else []
        if "kalkan" in variants:
            kalkan = start_proxy(
                tmp / "kalkan",
                school_ca=school,
                upstream=upstream,
                bundle=base_bundle(),
                upstream_ca=origin_ca,
                extra=extra + args.kalkan_extra.split(),
            )
            procs["kalkan"], proxies["kalkan"] = kalkan, (kalkan.port, "news.test:443")
        # (variant, its `--set` options, how mitmdump is started: None = as the agent does)
        for name, option, launch in (
                ("kalkan_process", "kalkan_relay_mode=process", None),  # the front, the pump process
                ("kalkan_asyncio", "kalkan_relay_mode=asyncio", None),  # the front, asyncio
                ("kalkan_thread", "kalkan_relay_mode=splice", None),  # the front, the pump as a thread
                ("kalkan_no_front", "kalkan_front=false", None),  # accepted by mitmproxy, kernel relay
                ("kalkan_no_front_process", "kalkan_front=false kalkan_relay_mode=process", None),
                ("kalkan_mitm_connect", "kalkan_front=false kalkan_fast_connect=false", None),
                # the same addon relaying through mitmproxy's layers
                ("kalkan_mitm_relay", "kalkan_front=false kalkan_fast_relay=false", None),
                ("kalkan_asyncio_loop", "", [str(MITMDUMP)])):  # as shipped, on asyncio's own loop
            if name in variants:
                other = start_proxy(
                    tmp / name,
                    school_ca=school,
                    upstream=upstream,
                    bundle=base_bundle(),
                    upstream_ca=origin_ca,
                    extra=[*extra, *(a for o in option.split() for a in ("--set", o))],
                    launch=launch,
                )
                procs[name], proxies[name] = other, (other.port, "news.test:443")
        if "before" in variants:
            import tests.support.proxy_rig as rig

            entry, rig.ENTRY = rig.ENTRY, args.before / "agent" / "proxy" / "mitm_entry.py"
            try:
                before = start_proxy(
                    tmp / "before",
                    school_ca=school,
                    upstream=upstream,
                    bundle=base_bundle(),
                    upstream_ca=origin_ca,
                    extra=extra,
                    launch=launch_of(args.before),
                )
            finally:
                rig.ENTRY = entry
            procs["before"], proxies["before"] = before, (before.port, "news.test:443")
        if "bare" in variants:
            bare, port = bare_proxy(tmp / "bare", upstream, origin_ca)
            procs["bare"], proxies["bare"] = bare, (port, "news.test:443")
        if "e2guardian" in variants:
            e2g, port = start_e2guardian(tmp, args.ut1)
            proxies["e2guardian"] = (port, f"127.0.0.1:{origin.https_port}")
        spec = {
            "cafile": str(origin_ca),
            "https_port": origin.https_port,
            "objects": args.objects,
            "pages": args.pages,
            "variants": ["direct", *variants],
            "proxies": proxies,
        }
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        # warm-up: every proxy has decided news.test once (Kalkan's verdict cache, DNS)
        warm = {**spec, "pages": 2}
        teacher.run(["/usr/bin/python3", "-c", CLIENT, json.dumps(warm)])
        pids = {name: proc.proc.pid if hasattr(proc, "proc") else proc.pid for name, proc in procs.items()}
        if e2g is not None:
            pids["e2guardian"] = e2g.pid
        cpu_before = {name: tree_cpu_ns(pid) for name, pid in pids.items()}
        own_before = {name: own_cpu_ns(pid) for name, pid in pids.items()}
        spies = []
        if args.spy:
            args.spy.mkdir(parents=True, exist_ok=True)
            spy = Path(sys.executable).parent / "py-spy"
            record = [str(spy), "record", "--format", "raw", "--nonblocking", "--rate", "500"]
            spies = [subprocess.Popen([*record, "-p", str(pid), "-o", str(args.spy / f"{name}.txt")],
                                      stdout=subprocess.DEVNULL,
                                      stderr=open(args.spy / f"{name}.log", "wb"))  # noqa: SIM115
                     for name, pid in pids.items() if name != "e2guardian"]
            time.sleep(1.0)
        result = teacher.run(["/usr/bin/python3", "-c", CLIENT, json.dumps(spec)])
        for spy_proc in spies:
            spy_proc.send_signal(signal.SIGINT)
            spy_proc.wait(30)
        cpu_per_page = {
            name: (tree_cpu_ns(pid) - cpu_before[name]) / args.pages / 1e6 for name, pid in pids.items()
        }
        own_per_page = {
            name: (own_cpu_ns(pid) - own_before[name]) / args.pages / 1e6 for name, pid in pids.items()
        }
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-2000:])
        pages = json.loads(result.stdout.strip().splitlines()[-1])
        times = {name: [one[0] for one in got] for name, got in pages.items()}
        load_after = os.getloadavg()[0]
    finally:
        for proc in procs.values():
            if hasattr(proc, "stop"):
                proc.stop()
            else:
                proc.terminate()
                proc.wait(10)
        if e2g is not None:
            stop_e2guardian(e2g)
        origin.close()
        if served is not None:
            served.close()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    print(
        f"machine: nproc={os.cpu_count()}, CPU {cpu}; {started}; "
        f"1-min load average {load:.1f} → {load_after:.1f}; "
        f"{args.pages} pages of {args.objects} objects per variant, interleaved; origin: {args.origin}"
    )
    print()
    direct = times["direct"]
    print(
        "| variant | page p50 (ms) | added p50 (ms) | added p90 (ms) | added per object p50 (ms) "
        "| proxy CPU per page (ms) | of which the main process (ms) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| direct | {statistics.median(direct) * 1e3:.2f} | – | – | – | – | – |")
    for name in variants:
        added = sorted((t - d) * 1e3 for t, d in zip(times[name], direct, strict=True))
        p50 = statistics.median(added)
        p90 = added[int(0.9 * (len(added) - 1))]
        print(
            f"| {name} | {statistics.median(times[name]) * 1e3:.2f} | {p50:+.2f} | {p90:+.2f} | "
            f"{p50 / max(args.objects, 1):+.3f} | {cpu_per_page[name]:.2f} | {own_per_page[name]:.2f} |"
        )
    if args.phases:
        print()
        print("| variant | connected, CONNECT answered p50 (ms) | TLS handshake p50 (ms) "
              "| objects p50 (ms) |")
        print("| --- | --- | --- | --- |")
        for name in ["direct", *variants]:
            medians = [statistics.median(one[phase] for one in pages[name]) * 1e3 for phase in (1, 2, 3)]
            print(f"| {name} | " + " | ".join(f"{m:.2f}" for m in medians) + " |")


def own_cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of the process itself (its threads, not its children)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def tree_cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of a process, its threads and its children (E2Guardian forks, the pump)."""
    return cpu_ns(pid)


if __name__ == "__main__":
    main()
