"""Proxy CPU per MiB of HTTPS passed through: 4 MiB downloads over a CONNECT tunnel (3 per
sample, so the connections' set-up is included), Kalkan's relays (`kalkan`: the kernel relay, as
shipped), bare mitmdump and E2Guardian, interleaved; with BEFORE, an older checkout's addon too.

    sudo [GETS=8] .venv/bin/python benchmarks/proxy/passthrough_bulk.py [ROUNDS [BEFORE]]

GETS: 4 MiB downloads one after another in each tunnel (default 1): 8 measures long downloads,
which pass the kernel relay's budget (agent/proxy/kernel_relay.py, KERNEL_BUDGET).

CPU = the proxy's threads and children (the splice pump process, E2Guardian's forks).
"""
# ruff: noqa: E401, E402, E501, E701, E702
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]; sys.path.insert(0, str(REPO)); sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab import cpu_ns
from e2guardian_rig import start_e2guardian, stop_e2guardian
from run import bare_proxy

from tests.proxy.conftest import FAKE_HOSTS, TEACHER, _account, base_bundle, upstream_for
from tests.support.proxy_rig import launch_of, make_ca, start_origin, start_proxy

CL = r'''
import json, socket, ssl, sys, time
spec = json.loads(sys.argv[1]); ctx = ssl.create_default_context(cafile=spec["cafile"])
port, target = spec["proxy"]
for _ in range(spec["n"]):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    h = b""
    while b"\r\n\r\n" not in h: h += s.recv(4096)
    t = ctx.wrap_socket(s, server_hostname="news.test")
    r = t.makefile("rb")
    for i in range(spec["gets"]):
        last = b"close" if i == spec["gets"] - 1 else b"keep-alive"
        t.sendall(b"GET /big HTTP/1.1\r\nHost: news.test\r\nConnection: " + last + b"\r\n\r\n")
        length = None
        while True:
            line = r.readline()
            if line in (b"\r\n", b""): break
            if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
        n = len(r.read(length))
        assert n > 4_000_000, n
    r.close()
    t.close()
'''
teacher = _account(TEACHER)
GETS = int(os.environ.get("GETS", "1"))
tmp = Path(tempfile.mkdtemp(prefix="kalkan-bulk-")); tmp.chmod(0o755)
origin = start_origin(FAKE_HOSTS, tmp); oca = tmp/"origin-ca.pem"; oca.chmod(0o644)
up = upstream_for(origin); school = make_ca("S")
procs = {}
for name, opt in (("kalkan", "kalkan_relay_mode=kernel"), ("kalkan_process", "kalkan_relay_mode=process"), ("kalkan_thread", "kalkan_relay_mode=splice"), ("kalkan_asyncio", "kalkan_relay_mode=asyncio")):
    p = start_proxy(tmp/name, school_ca=school, upstream=up, bundle=base_bundle(), upstream_ca=oca, extra=["--set", opt])
    procs[name] = (p, p.proc.pid, (p.port, "news.test:443"))
if len(sys.argv) > 2:  # an older checkout's addon, as passthrough_page.py's --before
    import tests.support.proxy_rig as rig
    before_tree = Path(sys.argv[2]).resolve()
    entry, rig.ENTRY = rig.ENTRY, before_tree / "agent" / "proxy" / "mitm_entry.py"
    try:
        p = start_proxy(tmp/"before", school_ca=school, upstream=up, bundle=base_bundle(), upstream_ca=oca, launch=launch_of(before_tree))
    finally:
        rig.ENTRY = entry
    procs["before"] = (p, p.proc.pid, (p.port, "news.test:443"))
b, bport = bare_proxy(tmp/"b", up, oca); procs["bare"] = (b, b.pid, (bport, "news.test:443"))
e, eport = start_e2guardian(tmp, Path("/work/shared/data/ut1")); procs["e2guardian"] = (e, e.pid, (eport, f"127.0.0.1:{origin.https_port}"))
res = {k: [] for k in procs}
try:
    print("load", os.getloadavg()[0])
    for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        for name in (list(procs) if rnd % 2 == 0 else list(reversed(procs))):
            _, pid, proxy = procs[name]
            c = cpu_ns(pid)
            r = teacher.run(["/usr/bin/python3", "-c", CL, json.dumps({"cafile": str(oca), "proxy": proxy, "n": 3, "gets": GETS})])
            assert r.returncode == 0, r.stderr[-500:]
            res[name].append((cpu_ns(pid) - c) / 1e6 / (3 * 4 * GETS))  # ms per MiB
    print("load", os.getloadavg()[0])
    for name, v in res.items():
        print(f"| {name} | {statistics.median(v):.3f} ms per MiB |")
finally:
    for name, (p, _pid, _) in procs.items():
        if name == "e2guardian": stop_e2guardian(p)
        elif hasattr(p, "stop"): p.stop()
        else: p.terminate()
    origin.close()
