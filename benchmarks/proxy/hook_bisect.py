"""Which of the addon's hooks costs CPU in a running proxy: variants side by side, plain HTTP.

    sudo .venv/bin/python benchmarks/proxy/hook_bisect.py --index IDX [--rounds 10] \
        bare bare2 full noreq reqonly responly nohooks inert noindex [head=/path/to/older/checkout]

Each name is a mitmdump: `bare`/`bare2` plain mitmdump (the A/A pair), the others the Kalkan addon
through `hook_variant_entry.py` (`noindex`: full, without the category index; `NAME=DIR`: the full
addon of another checkout; `direct`, `direct-VARIANT`: the full addon or a variant in mitmdump's
own addon chain through `hook_variant_main.py` instead of `-s`).  Fresh processes every 2 rounds,
ABBA order, 3 s wrk slices; prints each variant's median CPU µs per request
(/proc/<pid>/task/*/schedstat) and its ratio to the first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from ab import cpu_ns, run_wrk  # noqa: E402
from run import WRK_LUA  # noqa: E402

from tests.proxy.conftest import FAKE_HOSTS, TEACHER, _account, base_bundle, upstream_for  # noqa: E402
from tests.support.proxy_rig import MITMDUMP, UPSTREAM_MAP, free_port, start_origin, wait_port  # noqa: E402

ENTRY = HERE / "hook_variant_entry.py"
DIRECT_MAIN = HERE / "hook_variant_main.py"


def start(spec: str, where: Path, mapping: str, index: str, origin_port: int) -> tuple[subprocess.Popen, int]:
    name, _, code = spec.partition("=")
    port = free_port()
    where.mkdir(parents=True)
    # the load asks the origin's own port: a port the proxy may connect to (network.proxy_ports), as in ab.py
    bundle = base_bundle()
    bundle = bundle.model_copy(update={"network": bundle.network.model_copy(
        update={"proxy_ports": [80, 443, origin_port]})})
    (where / "policy.json").write_text(bundle.model_dump_json())
    cmd = [str(MITMDUMP), "--quiet", "-s", str(UPSTREAM_MAP), "--mode", f"regular@127.0.0.1:{port}",
           "--set", f"confdir={where}", "--set", "connection_strategy=lazy",
           "--set", f"test_upstream_map={mapping}"]
    env = dict(os.environ)
    if not name.startswith("bare"):
        cmd[2:2] = ["-s", str(ENTRY)]
        cmd += ["--set", f"kalkan_state_dir={where}", "--set", "kalkan_seat=lab1-01"]
        if name != "noindex":
            cmd += ["--set", f"kalkan_index={index}"]
        env["KALKAN_HOOK_VARIANT"] = "full" if (code or name == "noindex") else name
        if name.startswith("timed"):  # `timed`, or e.g. `timed-before=DIR`: the hooks timed
            env["KALKAN_HOOK_VARIANT"], env["KALKAN_TIMED_LABEL"] = "timed", spec
        if name.startswith("direct"):
            # the addon in mitmdump's own chain (agent/proxy/mitmdump_main.py), not a -s script;
            # `direct` is the full addon, `direct-VARIANT` a hook_variant_entry variant
            cmd = [sys.executable, str(DIRECT_MAIN), *(arg for arg in cmd[1:] if arg != str(ENTRY))]
            cmd.remove("-s")  # the one that went with ENTRY (UPSTREAM_MAP's stays)
            env["KALKAN_HOOK_VARIANT"] = name.partition("-")[2] or "full"
        if code:
            env["KALKAN_CODE"] = code
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=proc)
    return proc, port


def hook_times(since: float) -> None:
    """The `timed` variants' own hook CPU inside the running proxy (hook_variant_entry.py), summed
    over their processes of this run."""
    sums: dict[str, list[int]] = {}
    for path in Path("/tmp").glob("kalkan-hook-times-*.txt"):
        if path.stat().st_mtime < since:
            continue
        label, *numbers = path.read_text().splitlines()[-1].split()
        if len(numbers) != 5:
            continue
        total = sums.setdefault(label, [0] * 5)
        for i, value in enumerate(numbers):
            total[i] += int(value)
    for label, (calls, _wall, cpu, resp_calls, resp_cpu) in sorted(sums.items()):
        print(f"{label}: thread CPU inside the proxy, request hook {cpu / calls / 1000:.1f} µs, "
              f"response hook {resp_cpu / max(resp_calls, 1) / 1000:.1f} µs per call ({calls} requests)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--index", required=True, help="a compiled UT1 index (kalkan-filter compile)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the load generator runs as a real teacher account")
    teacher = _account(TEACHER)
    tmp = Path(tempfile.mkdtemp(prefix="kalkan-bisect-"))
    tmp.chmod(0o755)
    origin = start_origin(FAKE_HOSTS, tmp)
    for server in origin.servers:
        server.handle_error = lambda request, address: None
    mapping = ",".join(f"{k}={v[0]}:{v[1]}" for k, v in upstream_for(origin).items())
    script = tmp / "abs.lua"
    ip_host = f"127.0.0.1:{origin.http_port}"
    script.write_text(WRK_LUA.format(url=f"http://{ip_host}/", host=ip_host))
    script.chmod(0o644)
    costs: dict[str, list[float]] = {spec: [] for spec in args.variants}
    started = time.time()
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for i in range(args.rounds):
            if i % 2 == 0:
                for proc, _ in running.values():
                    proc.terminate()
                    proc.wait(10)
                running = {spec: start(spec, tmp / f"r{i}-{n}", mapping, args.index, origin.http_port)
                           for n, spec in enumerate(args.variants)}
                for _, port in running.values():
                    run_wrk(teacher, port, 2, script)  # warm-up
            order = args.variants if i % 2 == 0 else list(reversed(args.variants))
            for spec in order:
                proc, port = running[spec]
                before = cpu_ns(proc.pid)
                requests, _ = run_wrk(teacher, port, 3, script)
                costs[spec].append((cpu_ns(proc.pid) - before) / requests / 1000)
    finally:
        for proc, _ in running.values():
            proc.terminate()
            proc.wait(10)
        origin.close()
    hook_times(started)
    first = statistics.median(costs[args.variants[0]])
    print(f"{args.rounds} rounds, fresh processes every 2; 1-min load now {os.getloadavg()[0]:.1f}")
    for spec, values in costs.items():
        median = statistics.median(values)
        print(f"{spec:12s} CPU µs/request {median:7.0f}  / {args.variants[0]} {median / first:.3f}   "
              f"rounds: {', '.join(f'{v:.0f}' for v in values)}")
    # the same round's slices are seconds apart: their ratio cancels what drifts between rounds
    print(f"per-round ratios to {args.variants[0]}: median (IQR; min-max)")
    for spec, values in costs.items():
        ratios = [v / b for v, b in zip(values, costs[args.variants[0]], strict=True)]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(f"{spec:14s} {statistics.median(ratios):.3f} ({q1:.3f}-{q3:.3f}; "
              f"{min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
