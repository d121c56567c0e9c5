"""IPv6 rogue router advertisements: decoder, detector, rate limit and kernel filter over
crafted frames (the live check is in test_live_netns.py)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import ICMPv6ND_RA, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from agent.network.bpf import compile_filter
from agent.network.detectors import NetworkConfig
from agent.network.monitor import NetworkMonitor
from agent.network.packets import RouterAdvertisement, parse
from agent.network.sniffer import build_bpf
from policy_server.protocol import NetworkSection, make_event
from tests.network import frames as f
from tests.network.bpf_vm import run_filter

CONFIG = NetworkConfig.from_section(NetworkSection(**f.policy_network()), local_ips=[f.WS_IP],
                                    interface="eth0")


def events(packets, config=CONFIG, *, step: float = 0.1, interval_s: float = 60.0):
    """What the monitor would send, with the rate limit, flushed at the end."""
    monitor = NetworkMonitor(config, interval_s=interval_s)
    out = []
    for i, packet in enumerate(packets):
        out += monitor.feed(bytes(packet), i * step)
    return out + monitor.flush(len(packets) * step, force=True)


def config_with(routers: list[str]) -> NetworkConfig:
    return NetworkConfig.from_section(NetworkSection(ipv6_routers=routers))


def test_the_decoder_keeps_the_router_its_lifetime_and_prefixes():
    ra = f.router_advertisement(prefixes=("2001:db8:66::", "2001:db8:67::"), lifetime=9000)
    assert parse(bytes(ra)) == RouterAdvertisement(f.ROGUE_RA_MAC, f.ROGUE_RA_IP, 9000,
                                                   ("2001:db8:66::/64", "2001:db8:67::/64"))
    # hidden behind a hop-by-hop header, as RA-guard evasion tools send it
    assert parse(bytes(f.router_advertisement(hop_by_hop=True))).src_ip == f.ROGUE_RA_IP


def test_ras_a_host_would_drop_are_not_router_advertisements():
    assert parse(bytes(f.router_advertisement(hop_limit=64))) is None  # crossed a router
    off_link = Ether(src=f.ROGUE_RA_MAC) / IPv6(src="2001:db8::66", dst=f.ALL_NODES, hlim=255) / ICMPv6ND_RA()
    assert parse(bytes(off_link)) is None  # RFC 4861: the source must be link-local
    frame = bytes(f.router_advertisement())
    assert all(parse(frame[:cut]) is None for cut in range(14 + 40 + 16))  # cut before the lifetime
    for packet in f.ipv6_neighbour_traffic():
        assert parse(bytes(packet)) is None, packet.summary()


def test_an_ra_from_the_school_router_raises_nothing():
    assert events([f.router_advertisement(f.GW_LL, f.GW_MAC)] * 5) == []


def test_an_ra_from_an_unknown_router_is_one_event_with_the_facts():
    [event] = events([f.router_advertisement()])
    assert event.event_type == "net.rogue_ra"
    assert event.data == {"src_mac": f.ROGUE_RA_MAC, "src_ip": f.ROGUE_RA_IP, "router_lifetime": 1800,
                          "prefixes": ["2001:db8:66::/64"], "interface": "eth0", "occurrences": 1}
    stored = make_event(event.event_type, event.data)  # valid on the wire, with its clause
    assert stored.clauses == ["000 §5.6"]


def test_a_storm_is_one_event_per_rate_limit_window():
    # 200 RAs over 200 s with a 60 s window: one at once, then one summary per window
    out = events([f.router_advertisement()] * 200, step=1.0, interval_s=60)
    assert [e.data["occurrences"] for e in out] == [1, 60, 60, 60, 19]
    assert sum(e.data["occurrences"] for e in out) == 200


def test_an_ra_with_lifetime_zero_raises_nothing():
    # "I am not a default router" (also what a router sends when it shuts down)
    assert events([f.router_advertisement(lifetime=0)], config_with([])) == []
    assert events([f.router_advertisement(lifetime=0)]) == []


def test_with_no_routers_in_the_policy_any_default_router_is_reported():
    [event] = events([f.router_advertisement(f.GW_LL, f.GW_MAC)], config_with([]))
    assert event.data["src_ip"] == f.GW_LL  # an IPv4-only lab has no IPv6 router of its own


@pytest.mark.parametrize("routers", [[f.GW_MAC], [f.GW_LL], ["FE80:0:0::1%eth0"], ["02-00-00-00-00-01"]])
def test_a_router_is_recognised_by_its_mac_or_its_link_local_address(routers):
    assert events([f.router_advertisement(f.GW_LL, f.GW_MAC)], config_with(routers)) == []
    assert len(events([f.router_advertisement()], config_with(routers))) == 1


def test_with_both_listed_a_laptop_borrowing_the_router_s_address_is_reported():
    spoof = f.router_advertisement(f.GW_LL, f.ROGUE_RA_MAC)
    [event] = events([spoof])
    assert (event.data["src_ip"], event.data["src_mac"]) == (f.GW_LL, f.ROGUE_RA_MAC)


@pytest.mark.parametrize("entry", ["2001:db8::1", "router", "10.77.0.1", "02:00:00:00:01"])
def test_a_bad_router_entry_is_refused_with_the_fix(entry):
    with pytest.raises(ValueError, match=f"ipv6_routers entry {entry!r} is neither a MAC .* link-local"):
        config_with([entry])


PROGRAM = compile_filter(build_bpf(CONFIG))


def test_the_kernel_filter_passes_router_advertisements():
    for packet in [
        f.router_advertisement(),
        f.router_advertisement(hop_by_hop=True),
        f.router_advertisement(f.GW_LL, f.GW_MAC, lifetime=0),  # the detector decides, not the filter
    ]:
        assert run_filter(PROGRAM, bytes(packet)), packet.summary()


def test_the_kernel_filter_still_drops_other_ipv6_and_bulk_traffic():
    web6 = Ether(src=f.GW_MAC, dst=f.WS_MAC) / IPv6(src="2001:db8::10", dst="2001:db8::2")
    for packet in [
        *f.ipv6_neighbour_traffic(),
        f.router_advertisement(hop_limit=64),  # hosts drop it anyway
        web6 / TCP(sport=443, dport=41001, flags="A") / Raw(b"\0" * 1400),
        web6 / TCP(sport=41001, dport=443, flags="PA") / Raw(b"\x17\x03\x03" + b"x" * 500),
        f.tcp_data("203.0.113.10", 443),
    ]:
        assert not run_filter(PROGRAM, bytes(packet)), packet.summary()
