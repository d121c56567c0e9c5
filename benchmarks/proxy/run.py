"""Proxy benchmark: mitmdump + Kalkan addon vs bare mitmdump vs E2Guardian, side by side.

    sudo .venv/bin/python benchmarks/proxy/run.py [--seconds 6] [--rounds 3]

Measures (all on loopback, the load generator run as a real teacher account so the
addon makes real decisions):
* plain HTTP requests/s (wrk, absolute-form requests to the proxy port);
* CONNECT pass-through: new connection + CONNECT + TLS to the origin + one request,
  per second (Python asyncio load generator, same for both proxies);
* new TLS connections decided at the ClientHello (the same, the host decided at the SNI);
* the decision itself (filters.decide / decide_host through the addon's Engine), p50/p99;
* added latency p50 of one sequential page load (curl, new connection) vs direct;
* proxy RSS after the load;
* E2Guardian 5.3 (Debian) with the same UT1 domain lists, plain HTTP req/s and RSS;
* the socket-owner lookup: NETLINK_SOCK_DIAG vs the /proc/net/tcp scan, at this moment's
  socket count.
Kalkan runs with the compiled UT1 index (the lists E2Guardian gets).  Every load figure is
measured `--rounds` times, the loads of the proxies interleaved, and the median reported with
the load average.  Prints a Markdown table; RESULTS.md keeps the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2guardian_rig import start_e2guardian, stop_e2guardian  # noqa: E402

from agent.proxy.engine import Engine  # noqa: E402
from tests.proxy.conftest import FAKE_HOSTS, TEACHER, _account, base_bundle, upstream_for  # noqa: E402
from tests.support.proxy_rig import (  # noqa: E402
    MITMDUMP,
    UPSTREAM_MAP,
    free_port,
    make_ca,
    start_origin,
    start_proxy,
    wait_port,
)

WRK_LUA = """
wrk.path = "{url}"
wrk.headers["Host"] = "{host}"
"""


PROFILE_ADDON = Path(__file__).resolve().parent / "profile_addon.py"


def profile_args(out: Path | None) -> list[str]:
    """mitmdump arguments that cProfile its event loop into `out` (nothing when None)."""
    return ["-s", str(PROFILE_ADDON), "--set", f"bench_profile={out}"] if out else []


def compile_index(out: Path) -> Path:
    """The UT1 index compiled from ../shared/data/ut1 into `out`, readable by the proxies' accounts."""
    subprocess.run([sys.executable, "-m", "filters.cli", "compile", "-o", str(out), "--ut1",
                    str(REPO.parent / "shared" / "data" / "ut1")], check=True, capture_output=True, cwd=REPO)
    out.chmod(0o644)
    return out


def bare_proxy(state: Path, upstream: dict, origin_ca: Path,
               profile: Path | None = None, extra: list[str] = (), prefix: list[str] = (),
               ready_s: float = 30.0) -> tuple[subprocess.Popen, int]:
    port = free_port()
    mapping = ",".join(f"{k}={v[0]}:{v[1]}" for k, v in upstream.items())
    proc = subprocess.Popen([*prefix, str(MITMDUMP), "--quiet", "-s", str(UPSTREAM_MAP), "--mode",
                             f"regular@127.0.0.1:{port}", "--set", f"confdir={state}",
                             "--set", "connection_strategy=lazy", "--set", f"test_upstream_map={mapping}",
                             # bare mitmdump's own pass-through for the same host Kalkan passes
                             "--set", r"ignore_hosts=^news\.test",
                             "--set", f"ssl_verify_upstream_trusted_ca={origin_ca}",
                             *profile_args(profile), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, ready_s, proc=proc)
    return proc, port


def wrk_rps(account, proxy_port: int, url: str, host: str, seconds: int, tmp: Path) -> float:
    script = tmp / "abs.lua"
    script.write_text(WRK_LUA.format(url=url, host=host))
    script.chmod(0o644)
    out = account.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script),
                       f"http://127.0.0.1:{proxy_port}"]).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out)


CONNECT_LOAD = r"""
import asyncio, ssl, sys, time
port, host, seconds, cafile = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
done = 0
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    await r.readuntil(b"\r\n\r\n")
    await w.start_tls(ctx, server_hostname=host)
    w.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await r.read()
    w.close()
async def worker(end):
    global done
    while time.monotonic() < end:
        await one(); done += 1
async def main():
    start = time.monotonic()
    await asyncio.gather(*[worker(start + seconds) for _ in range(8)])
    return time.monotonic() - start
elapsed = asyncio.run(main())
print(done, elapsed)
"""


def connect_rps(account, proxy_port: int, host: str, seconds: int, cafile: Path, tmp: Path) -> float:
    script = tmp / "connect_load.py"
    script.write_text(CONNECT_LOAD)
    script.chmod(0o644)
    out = account.run(["/usr/bin/python3", str(script), str(proxy_port), host, str(seconds), str(cafile)])
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1500:])
    done, elapsed = out.stdout.strip().splitlines()[-1].split()
    return int(done) / float(elapsed)


def latency_p50(account, proxy_port: int | None, url: str, cafile: Path, n: int = 60,
                resolve: str | None = None) -> float:
    samples = []
    for _ in range(n):
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "--cacert", str(cafile), url]
        if proxy_port:
            args += ["-x", f"http://127.0.0.1:{proxy_port}"]
        if resolve:
            args += ["--resolve", resolve]
        samples.append(float(account.run(args).stdout) * 1000)
    return statistics.median(samples)


def decision_timing(index: str | None, n: int = 20000) -> dict[str, tuple[float, float]]:
    """p50/p99 (µs) of the ClientHello decision (cached per host and minute, as the addon does),
    of the uncached host decision, and of the per-request URL decision."""
    engine = Engine.from_bundle(base_bundle().model_dump(mode="json"), index=index)
    hosts = [f"h{i}.{h}" for i in range(40) for h in FAKE_HOSTS]  # a lab's working set of hosts
    urls = [f"https://{h}/path/{i}?q={i}" for i, h in enumerate(hosts)]
    now = time.time()

    def run(fn) -> tuple[float, float]:
        samples = []
        for i in range(n):
            start = time.perf_counter_ns()
            fn(i)
            samples.append((time.perf_counter_ns() - start) / 1000)
        samples.sort()
        return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]

    def host(i: int) -> None:
        engine.host_verdict(hosts[i % len(hosts)], group="student", user="s", seat="x", room=None, when=now)

    def host_uncached(i: int) -> None:
        engine._host_cache.clear()
        host(i)

    def url(i: int) -> None:
        engine.decide(urls[i % len(urls)], group="student", user="s", seat="x", room=None, when=now)

    return {"host (ClientHello, cached)": run(host), "host, uncached": run(host_uncached),
            "URL (each request)": run(url)}


def owner_lookup_timing(n: int = 200) -> tuple[float, float, int]:
    """Mean µs of one owner lookup by sock_diag and by the /proc scan, and the socket count."""
    import socket

    from agent.proxy.sockdiag import SockDiag
    from agent.proxy.subject import socket_owner_uid

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, peer = listener.accept()
        diag = SockDiag()
        start = time.perf_counter()
        for _ in range(n):
            assert diag.owner_uid(peer, listener.getsockname()) == os.geteuid()
        netlink = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in range(n // 10):
            assert socket_owner_uid(*peer) == os.geteuid()
        proc = (time.perf_counter() - start) / (n // 10) * 1e6
        diag.close()
        accepted.close()
        client.close()
    sockets = sum(1 for _ in open("/proc/net/tcp")) + sum(1 for _ in open("/proc/net/tcp6")) - 2
    return netlink, proc, sockets


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (e2guardian may fork helpers)."""
    parent = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain-only", action="store_true",
                        help="only the plain-HTTP req/s (Kalkan, bare, E2Guardian), no TLS or latency loads")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for cProfile dumps of both mitmdumps' loops (kalkan.prof, bare.prof)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the load generator runs as a real teacher account")
    teacher = _account(TEACHER)
    tmp = Path(tempfile.mkdtemp(prefix="kalkan-bench-"))
    tmp.chmod(0o755)
    ut1 = REPO.parent / "shared" / "data" / "ut1"
    index = compile_index(tmp / "ut1.idx")
    from filters.categories import UT1_MAP

    e2g_lists = tmp / "ut1-mapped"  # the same UT1 folders Kalkan's index imports
    e2g_lists.mkdir()
    for folder in sorted(ut1.iterdir()):
        if folder.name in UT1_MAP and (folder / "domains").is_file():
            (e2g_lists / folder.name).mkdir()
            (e2g_lists / folder.name / "domains").symlink_to(folder / "domains")
    origin = start_origin(FAKE_HOSTS, tmp)
    origin_ca = tmp / "origin-ca.pem"
    school = make_ca("Bench School CA")
    school_ca = tmp / "school-ca.pem"
    school_ca.write_text(school.cert_pem)
    upstream = upstream_for(origin)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    kalkan_prof = args.profile / "kalkan.prof" if args.profile else None
    bare_prof = args.profile / "bare.prof" if args.profile else None
    kalkan = start_proxy(tmp / "kalkan", school_ca=school, upstream=upstream, bundle=base_bundle(),
                         upstream_ca=origin_ca,
                         extra=["--set", f"kalkan_index={index}", *profile_args(kalkan_prof)])
    bare, bare_port = bare_proxy(tmp / "bare", upstream, origin_ca, bare_prof)
    e2g, e2g_port = start_e2guardian(tmp, e2g_lists)
    loads: list[tuple[float, float, float]] = []
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    try:
        ip_host = f"127.0.0.1:{origin.http_port}"
        ip_url = f"http://{ip_host}/"
        add("direct", wrk_rps(teacher, origin.http_port, ip_url, ip_host, args.seconds, tmp))
        bare_cafile = tmp / "bare" / "mitmproxy-ca-cert.pem"
        for _ in range(args.rounds):
            loads.append(os.getloadavg())
            # interleaved, so contention from other work on the machine hits all alike
            # plain HTTP by the origin's address: the same URL for all three proxies (the fake
            # host names need the test-only upstream map, which slows both mitmdumps alike)
            for key, port in (("plain k", kalkan.port), ("plain b", bare_port), ("plain e", e2g_port)):
                add(key, wrk_rps(teacher, port, ip_url, ip_host, args.seconds, tmp))
            if args.plain_only:
                continue
            add("connect k", connect_rps(teacher, kalkan.port, "news.test", args.seconds, origin_ca, tmp))
            add("connect b", connect_rps(teacher, bare_port, "news.test", args.seconds, origin_ca, tmp))
            add("tls k", connect_rps(teacher, kalkan.port, "www.google.com", args.seconds, school_ca, tmp))
            add("tls b", connect_rps(teacher, bare_port, "www.google.com", args.seconds, bare_cafile, tmp))
            add("lat direct", latency_p50(teacher, None, f"https://news.test:{origin.https_port}/", origin_ca,
                                          n=40, resolve=f"news.test:{origin.https_port}:127.0.0.1"))
            add("lat k", latency_p50(teacher, kalkan.port, "https://news.test/", origin_ca, n=40))
            add("lat b", latency_p50(teacher, bare_port, "https://news.test/", bare_cafile, n=40))
        loads.append(os.getloadavg())
        decisions = {} if args.plain_only else decision_timing(str(index))
        netlink_us, proc_us, sockets = owner_lookup_timing()
        rss = {"k": psutil.Process(kalkan.proc.pid).memory_info().rss / 2**20,
               "b": psutil.Process(bare.pid).memory_info().rss / 2**20, "e": tree_rss_mib(e2g.pid)}
    finally:
        kalkan.stop()
        bare.terminate()
        bare.wait(10)
        stop_e2guardian(e2g)
        origin.close()
    med = {name: statistics.median(values) for name, values in samples.items()}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    load_text = ", ".join(f"{a:.1f}" for a, _, _ in loads)
    print(f"machine: nproc={os.cpu_count()}, CPU {cpu}; date {time.strftime('%Y-%m-%d %H:%M')}; "
          f"{args.rounds} rounds of {args.seconds} s, medians; 1-min load average at each round: {load_text}")
    print("| measure | Kalkan | bare mitmdump | ratio | goal | met? |")
    print("| --- | --- | --- | --- | --- | --- |")

    def row(name: str, k: float, b: float, goal: float = 0.97) -> None:
        ratio = k / b
        met = "yes" if ratio >= goal else "**no**"
        print(f"| {name} | {k:.0f} | {b:.0f} | {ratio:.2f} | ≥ {goal} | {met} |")

    row("plain HTTP req/s (wrk -t2 -c16)", med["plain k"], med["plain b"])
    ratios = [k / b for k, b in zip(samples["plain k"], samples["plain b"], strict=True)]
    print(f"| plain HTTP ratio per round | {', '.join(f'{r:.2f}' for r in ratios)} | – | – | – | – |")
    if args.plain_only:
        print(f"| E2Guardian plain req/s | {med['plain e']:.0f} | – | Kalkan / E2G "
              f"{med['plain k'] / med['plain e']:.2f} | – | – |")
        print("raw samples:", {name: [round(v, 1) for v in values] for name, values in samples.items()})
        return
    row("CONNECT pass-through, new TLS conn/s", med["connect k"], med["connect b"])
    row("new TLS conn/s decided at ClientHello (intercepted)", med["tls k"], med["tls b"])
    for name, (p50, p99) in decisions.items():
        print(f"| decision {name}: p50 / p99 (µs) | {p50:.1f} / {p99:.1f} | – | – | p99 ≤ 50 | "
              f"{'yes' if p99 <= 50 else '**no**'} |")
    added_k, added_b = med["lat k"] - med["lat direct"], med["lat b"] - med["lat direct"]
    print(f"| page load p50 (ms), direct {med['lat direct']:.2f} | {med['lat k']:.2f} (+{added_k:.2f}) | "
          f"{med['lat b']:.2f} (+{added_b:.2f}) | – | added ≤ 2 | {'yes' if added_k <= 2 else '**no**'} |")
    print(f"| proxy RSS after load (MiB) | {rss['k']:.0f} | {rss['b']:.0f} | {rss['k'] / rss['b']:.2f} "
          "| – | – |")
    print(f"| owner lookup (µs): sock_diag / /proc scan, {sockets} TCP sockets | {netlink_us:.0f} | "
          f"{proc_us:.0f} (the old way) | {proc_us / netlink_us:.0f}× faster | – | – |")
    print()
    print("| E2Guardian 5.3 (same UT1 lists), plain HTTP to 127.0.0.1 | E2Guardian | Kalkan | Kalkan / E2G |")
    print("| --- | --- | --- | --- |")
    print(f"| req/s (wrk -t2 -c16; the origin alone serves {med['direct']:.0f}) | {med['plain e']:.0f} | "
          f"{med['plain k']:.0f} | {med['plain k'] / med['plain e']:.2f} |")
    print(f"| RSS after load (MiB) | {rss['e']:.0f} | {rss['k']:.0f} | {rss['k'] / rss['e']:.2f} |")
    print()
    print("raw samples:", {name: [round(v, 1) for v in values] for name, values in samples.items()})


if __name__ == "__main__":
    main()
