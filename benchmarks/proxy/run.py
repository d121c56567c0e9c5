"""Proxy benchmark: mitmdump + Kalkan addon vs bare mitmdump, side by side in one run.

    sudo .venv/bin/python benchmarks/proxy/run.py [--seconds 8]

Measures (all on loopback, the load generator run as a real teacher account so the
addon makes real decisions):
* plain HTTP requests/s (wrk, absolute-form requests to the proxy port);
* CONNECT pass-through: new connection + CONNECT + TLS to the origin + one request,
  per second (Python asyncio load generator, same for both proxies);
* new TLS connections decided at the ClientHello (the same, the host decided at the SNI);
* the decision itself (filters.decide / decide_host through the addon's Engine), p50/p99;
* added latency p50 of one sequential page load (curl, new connection) vs direct;
* proxy RSS after the load.
Prints a Markdown table row set; RESULTS.md keeps the numbers.
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


def bare_proxy(state: Path, upstream: dict, origin_ca: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    mapping = ",".join(f"{k}={v[0]}:{v[1]}" for k, v in upstream.items())
    proc = subprocess.Popen([str(MITMDUMP), "--quiet", "-s", str(UPSTREAM_MAP), "--mode",
                             f"regular@127.0.0.1:{port}", "--set", f"confdir={state}",
                             "--set", "connection_strategy=lazy", "--set", f"test_upstream_map={mapping}",
                             # bare mitmdump's own pass-through for the same host Kalkan passes
                             "--set", r"ignore_hosts=^news\.test",
                             "--set", f"ssl_verify_upstream_trusted_ca={origin_ca}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=proc)
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
    end = time.monotonic() + seconds
    await asyncio.gather(*[worker(end) for _ in range(8)])
asyncio.run(main())
print(done / seconds)
"""


def connect_rps(account, proxy_port: int, host: str, seconds: int, cafile: Path, tmp: Path) -> float:
    script = tmp / "connect_load.py"
    script.write_text(CONNECT_LOAD)
    script.chmod(0o644)
    out = account.run(["/usr/bin/python3", str(script), str(proxy_port), host, str(seconds), str(cafile)])
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1500:])
    return float(out.stdout.strip().splitlines()[-1])


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


def decision_timing(n: int = 20000) -> tuple[float, float]:
    engine = Engine.from_bundle(base_bundle().model_dump(mode="json"))
    urls = [f"https://{h}/path/{i}?q={i}" for i in range(50) for h in FAKE_HOSTS]
    samples = []
    for i in range(n):
        url = urls[i % len(urls)]
        start = time.perf_counter_ns()
        host = url.split("/")[2]
        engine.host_verdict(host, group="student", user="s", seat="x", room=None, when=time.time())
        engine.decide(url, group="student", user="s", seat="x", room=None, when=time.time())
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the load generator runs as a real teacher account")
    teacher = _account(TEACHER)
    tmp = Path(tempfile.mkdtemp(prefix="kalkan-bench-"))
    tmp.chmod(0o755)
    origin = start_origin(FAKE_HOSTS, tmp)
    origin_ca = tmp / "origin-ca.pem"
    school = make_ca("Bench School CA")
    school_ca = tmp / "school-ca.pem"
    school_ca.write_text(school.cert_pem)
    upstream = upstream_for(origin)
    kalkan = start_proxy(tmp / "kalkan", school_ca=school, upstream=upstream, bundle=base_bundle(),
                         upstream_ca=origin_ca)
    bare, bare_port = bare_proxy(tmp / "bare", upstream, origin_ca)
    rows = []
    try:
        plain_url = f"http://news.test:{80}/"
        # interleave the runs so contention from other work on the machine hits both alike
        k1 = wrk_rps(teacher, kalkan.port, plain_url, "news.test", args.seconds, tmp)
        b1 = wrk_rps(teacher, bare_port, plain_url, "news.test", args.seconds, tmp)
        rows.append(("plain HTTP req/s (wrk -c16)", k1, b1))
        k2 = connect_rps(teacher, kalkan.port, "news.test", args.seconds, origin_ca, tmp)
        b2 = connect_rps(teacher, bare_port, "news.test", args.seconds, origin_ca, tmp)
        rows.append(("CONNECT pass-through conn/s (new TLS each)", k2, b2))
        bare_cafile = tmp / "bare" / "mitmproxy-ca-cert.pem"
        k3 = connect_rps(teacher, kalkan.port, "www.google.com", args.seconds, school_ca, tmp)
        b3 = connect_rps(teacher, bare_port, "www.google.com", args.seconds, bare_cafile, tmp)
        rows.append(("new TLS conn/s, intercepted after ClientHello decision", k3, b3))
        direct = latency_p50(teacher, None, f"https://news.test:{origin.https_port}/", origin_ca,
                             resolve=f"news.test:{origin.https_port}:127.0.0.1")
        via = latency_p50(teacher, kalkan.port, "https://news.test/", origin_ca)
        via_bare = latency_p50(teacher, bare_port, "https://news.test/", bare_cafile)
        p50, p99 = decision_timing()
        rss_k = psutil.Process(kalkan.proc.pid).memory_info().rss / 2**20
        rss_b = psutil.Process(bare.pid).memory_info().rss / 2**20
    finally:
        kalkan.stop()
        bare.terminate()
        bare.wait(10)
        origin.close()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"machine: nproc={os.cpu_count()}, CPU {cpu}; date {time.strftime('%Y-%m-%d %H:%M')}")
    print("| measure | Kalkan | bare mitmdump | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    for name, k, b in rows:
        print(f"| {name} | {k:.0f} | {b:.0f} | {k / b:.2f} | ≥ 0.97 |")
    print(f"| decision p50 / p99 (µs, host + URL) | {p50:.1f} / {p99:.1f} | – | – | p99 ≤ 50 |")
    print(f"| page load p50 (ms): direct {direct:.2f} | via Kalkan {via:.2f} (+{via - direct:.2f}) | "
          f"via bare {via_bare:.2f} (+{via_bare - direct:.2f}) | – | added ≤ 2 |")
    print(f"| proxy RSS after load (MiB) | {rss_k:.0f} | {rss_b:.0f} | {rss_k / rss_b:.2f} | – |")


if __name__ == "__main__":
    main()
