"""No bypass, shown in network namespaces: a "workstation" namespace with the Kalkan
nftables table and the transparent proxy (as its own OS user), an "internet" namespace
with real servers, and a real curl run as a real student account.

Each bypass attempt is paired with a control that succeeds for an exempt uid (or after the
table is removed), so a broken test rig cannot pass as a working filter.  (The proxy's own uid
is no control any more: it reaches only the web ports and the resolvers.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.platform.firewall import LinuxFirewall
from agent.proxy.ca import write_proxy_ca
from agent.proxy.nftables import FirewallConfig, render_ruleset
from tests.proxy.conftest import _account, base_bundle
from tests.support import netns_sweep
from tests.support.proxy_rig import ENTRY, LAUNCH, env_options, make_ca, make_leaf

pytestmark = pytest.mark.root
TPORT = 3129
NETSERVERS = os.path.join(os.path.dirname(__file__), "netns_servers.py")
PROBE = """
import socket, sys
family = socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == 'udp':
        s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b'probe', (host, port)); print(s.recvfrom(100)[0].decode())
    else:
        s = socket.create_connection((host, port), timeout=3); s.settimeout(3)
        print(s.recv(100).decode().strip())
except OSError as exc:
    print('FAILED', type(exc).__name__)
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def lab(readable_dir, accounts):
    tag = uuid.uuid4().hex[:6]
    ws, net = f"kws{tag}", f"knet{tag}"
    proxy_user, exempt = _account("kalkan-t-prx"), _account("kalkan-t-exm")
    netns_sweep.sweep("kws")  # a killed run's namespaces (their owner is dead), never a live run's
    netns_sweep.sweep("knet")
    netns_sweep.claim(ws)
    netns_sweep.claim(net)
    sh("ip", "netns", "add", ws)
    sh("ip", "netns", "add", net)
    procs: list[subprocess.Popen] = []
    try:
        sh("ip", "link", "add", f"v{tag}a", "netns", ws, "type", "veth", "peer", "name", f"v{tag}b",
           "netns", net)
        in_ws = ["ip", "netns", "exec", ws]
        in_net = ["ip", "netns", "exec", net]
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", "10.77.0.1/24", "dev", f"v{tag}a"],
                    ["ip", "-6", "addr", "add", "fd77::1/64", "dev", f"v{tag}a", "nodad"],
                    ["ip", "link", "set", f"v{tag}a", "up"],
                    ["ip", "route", "add", "default", "via", "10.77.0.2"],
                    ["ip", "-6", "route", "add", "default", "via", "fd77::2"]):
            sh(*in_ws, *cmd)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", "10.77.0.2/24", "dev", f"v{tag}b"],
                    ["ip", "addr", "add", "10.77.0.3/24", "dev", f"v{tag}b"],
                    ["ip", "-6", "addr", "add", "fd77::2/64", "dev", f"v{tag}b", "nodad"],
                    ["ip", "link", "set", f"v{tag}b", "up"]):
            sh(*in_net, *cmd)
        origin_ca = make_ca("Netns Origin Root")
        leaf = make_leaf(origin_ca, ["origin.test"])
        (readable_dir / "netns-leaf.pem").write_text(leaf.cert_pem)
        (readable_dir / "netns-leaf.key").write_text(leaf.key_pem)
        servers = subprocess.Popen([*in_net, sys.executable, NETSERVERS, str(readable_dir / "netns-leaf.pem"),
                                    str(readable_dir / "netns-leaf.key")], stdout=subprocess.PIPE, text=True)
        procs.append(servers)
        assert servers.stdout.readline().strip() == "ready"
        # the proxy, as its own user, in the workstation namespace
        state = readable_dir / f"netns-state-{tag}"
        state.mkdir()
        os.chown(state, proxy_user.uid, proxy_user.gid)
        school = make_ca("Netns School CA")
        write_proxy_ca(state / "mitmproxy", school.cert_pem, school.key_pem, owner_uid=proxy_user.uid)
        (state / "policy.json").write_text(base_bundle().model_dump_json())
        log = open(state / "mitmdump.log", "ab")  # noqa: SIM115
        proxy = subprocess.Popen([*in_ws, "setpriv", f"--reuid={proxy_user.uid}", f"--regid={proxy_user.gid}",
                                  "--clear-groups", *LAUNCH, "--quiet", "-s", str(ENTRY),
                                  "--mode", f"transparent@127.0.0.1:{TPORT}",  # loopback only, as
                                  "--mode", f"transparent@::1:{TPORT}",  # the collector runs it
                                  "--set", f"confdir={state / 'mitmproxy'}",
                                  "--set", "connection_strategy=lazy", "--set", "ssl_insecure=true",
                                  "--set", f"kalkan_state_dir={state}", "--set", "kalkan_seat=ns-01",
                                  *env_options([])],  # e.g. KALKAN_TEST_PROXY_SET="kalkan_front=true"
                                 stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(state)})
        procs.append(proxy)
        deadline = time.monotonic() + 30
        while "LISTEN" not in sh(*in_ws, "ss", "-ltn", f"sport = :{TPORT}").stdout.upper() and \
                f":{TPORT}" not in sh(*in_ws, "ss", "-ltn").stdout:
            assert proxy.poll() is None and time.monotonic() < deadline, (state / "mitmdump.log").read_text()
            time.sleep(0.2)
        firewall = LinuxFirewall(netns=ws)
        firewall.install(render_ruleset(FirewallConfig(proxy_uid=proxy_user.uid, transparent_port=TPORT,
                                                       dns_resolvers=("10.77.0.2",),
                                                       exempt_uids=(exempt.uid,))))
        yield {"ws": ws, "in_ws": in_ws, "firewall": firewall, "proxy_user": proxy_user, "state": state,
               "exempt": exempt, **accounts}
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        sh("ip", "netns", "del", ws, check=False)
        sh("ip", "netns", "del", net, check=False)
        netns_sweep.release(ws)
        netns_sweep.release(net)


def as_user(lab, account, *args: str) -> str:
    result = sh(*lab["in_ws"], "setpriv", f"--reuid={account.uid}", f"--regid={account.gid}",
                "--clear-groups", *args, check=False)
    return result.stdout + result.stderr


def probe(lab, account, kind: str, host: str, port: int) -> str:
    return as_user(lab, account, "/usr/bin/python3", "-c", PROBE, kind, host, str(port)).strip()


def test_direct_ip_and_ignored_proxy_settings_still_filtered(lab):
    student, teacher = lab["student"], lab["teacher"]
    for url in ("http://10.77.0.2/", "http://[fd77::2]/"):
        page = as_user(lab, student, "curl", "-sS", "--noproxy", "*", "--max-time", "10", url)
        assert 'id="kalkan-block"' in page, (url, page)
        assert "ORIGIN" in as_user(lab, teacher, "curl", "-sS", "--max-time", "10", url)
    page = as_user(lab, student, "curl", "-sSk", "--max-time", "10", "https://10.77.0.2/")
    assert 'id="kalkan-block"' in page  # no SNI: decided on the original destination
    assert "ORIGIN" in as_user(lab, teacher, "curl", "-sSk", "--max-time", "10", "https://10.77.0.2/")


def test_foreign_proxy_quic_dns_and_dot_fail(lab):
    student, own, proxy = lab["student"], lab["exempt"], lab["proxy_user"]
    # a proxy of the student's choosing (changing the browser's proxy settings)
    assert "FAILED" in probe(lab, student, "tcp", "10.77.0.2", 3128)
    assert probe(lab, own, "tcp", "10.77.0.2", 3128) == "FOREIGN SERVICE"  # control
    page = as_user(lab, student, "curl", "-sS", "--max-time", "5", "-x", "http://10.77.0.2:3128",
                   "http://10.77.0.2/")
    assert "ORIGIN" not in page
    # QUIC
    assert "FAILED" in probe(lab, student, "udp", "10.77.0.2", 443)
    assert probe(lab, own, "udp", "10.77.0.2", 443) == "probe"
    # DNS: the configured resolver answers, a foreign one is unreachable
    assert probe(lab, student, "udp", "10.77.0.2", 53) == "probe"
    assert "FAILED" in probe(lab, student, "udp", "10.77.0.3", 53)
    assert probe(lab, own, "udp", "10.77.0.3", 53) == "probe"
    # DNS over TLS
    assert "FAILED" in probe(lab, student, "tcp", "10.77.0.2", 853)
    assert probe(lab, own, "tcp", "10.77.0.2", 853) == "FOREIGN SERVICE"
    # the proxy's own uid is exempt from the redirect, not from the rules: no tunnel through it
    for port in (3128, 853):
        assert "FAILED" in probe(lab, proxy, "tcp", "10.77.0.2", port)
    assert "FAILED" in probe(lab, proxy, "udp", "10.77.0.3", 53)


def test_report_page_by_name_through_the_hosts_line(lab):
    """`report.kalkan` in /etc/hosts (the line the collector writes) → 192.0.2.80, a non-local
    address the redirect captures: a browser with no proxy setting opens the report page."""
    from agent.proxy import hosts

    netns_etc = Path("/etc/netns") / lab["ws"]  # `ip netns exec` mounts these over /etc
    netns_etc.mkdir(parents=True)
    try:
        (netns_etc / "hosts").write_text("127.0.0.1\tlocalhost\n")
        hosts.add_entry(netns_etc / "hosts", ["report.kalkan"])
        page = as_user(lab, lab["student"], "curl", "-sS", "--noproxy", "*", "--max-time", "10",
                       "-H", "Accept-Language: en", "http://report.kalkan/")
        assert "Report a bad page" in page, page
        # control: the proxy's own uid is not redirected, and nothing real answers at 192.0.2.80
        own = as_user(lab, lab["proxy_user"], "curl", "-sS", "--max-time", "3", "http://report.kalkan/")
        assert "Report a bad page" not in own
    finally:
        shutil.rmtree(netns_etc, ignore_errors=True)


def test_uninstall_removes_only_the_kalkan_table(lab):
    firewall, student = lab["firewall"], lab["student"]
    sh(*lab["in_ws"], "nft", "add", "table", "inet", "someone_else")
    assert firewall.installed()
    from agent.collectors.proxy import ProxyCollector
    from agent.proxy import hosts

    staged_hosts = lab["state"] / "root" / "etc" / "hosts"
    staged_hosts.parent.mkdir(parents=True, exist_ok=True)
    staged_hosts.write_text("127.0.0.1\tlocalhost\n")
    hosts.add_entry(staged_hosts, ["report.kalkan"])
    ProxyCollector.uninstall(lab["state"], root=lab["state"] / "root", netns=lab["ws"])
    assert not firewall.installed()
    assert staged_hosts.read_text() == "127.0.0.1\tlocalhost\n"  # our line gone, nothing else touched
    assert "someone_else" in sh(*lab["in_ws"], "nft", "list", "tables").stdout
    assert probe(lab, student, "tcp", "10.77.0.2", 3128) == "FOREIGN SERVICE"  # the rules were the cause
