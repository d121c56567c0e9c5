"""A two-namespace lab for live network tests: `lan` holds the gateway 10.77.0.1
(02:00:00:00:00:01, also the DHCP server and resolver), `ws` the workstation
10.77.0.2 whose default route points at it; one veth pair joins them.  Neither
namespace forwards or has a route out, so nothing sent here leaves the machine."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import is_root
from tests.network import frames as f
from tests.support import netns_sweep


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def lab():
    if not is_root():
        pytest.fail(
            "live network tests need root (network namespaces); run them as root or deselect -m 'not root'"
        )
    tag = f"k{os.getpid() % 100000}"
    ws, lan = f"{tag}ws", f"{tag}lan"
    netns_sweep.sweep("k")  # a killed run's k<pid>ws/lan (their owner is dead), never a live run's
    netns_sweep.claim(ws)
    netns_sweep.claim(lan)
    sh("ip", "netns", "add", ws)
    sh("ip", "netns", "add", lan)
    try:
        sh("ip", "link", "add", "kws0", "netns", ws, "type", "veth", "peer", "name", "klan0", "netns", lan)
        sh("ip", "-n", ws, "link", "set", "kws0", "address", f.WS_MAC)
        sh("ip", "-n", lan, "link", "set", "klan0", "address", f.GW_MAC)
        for ns, dev, addr in ((ws, "kws0", f"{f.WS_IP}/24"), (lan, "klan0", f"{f.GW_IP}/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ws, "route", "add", "default", "via", f.GW_IP)
        yield {"ws": ws, "lan": lan}
    finally:
        for ns in (ws, lan):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            netns_sweep.release(ns)
