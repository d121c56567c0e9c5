"""The pure parts of the no-bypass work: the ruleset's default deny and extras, the
destination check's cache, the firewall counters → net.bypass, the addon's helpers."""

from __future__ import annotations

import asyncio

import pytest

from agent.network.nftcounters import RefusedCount, RefusedWatch, read_refused
from agent.platform.firewall import FakeFirewall
from agent.proxy.addon import _plain_kind, _same_ip
from agent.proxy.destcheck import DestinationCheck, normal_ip
from agent.proxy.nftables import FirewallConfig, RulesetError, config_from_policy, parse_extra, render_ruleset
from policy_server.protocol import Group, NetworkSection, PolicyBundle


def test_people_default_deny_every_protocol_and_the_proxy_limited():
    text = render_ruleset(FirewallConfig(proxy_uid=990, dns_resolvers=("10.0.0.53", "fd00::53")))
    assert "meta skuid >= 1000 jump person_out" in text and "meta skuid 990 jump proxy_out" in text
    person = text.split("chain person_out {")[1].split("chain refuse")[0]
    assert "meta l4proto tcp tcp dport { 80, 443 } accept" in person and "jump refuse" in person
    assert "ip daddr { 10.0.0.53 } accept" in person and "ip6 daddr { fd00::53 } accept" in person
    proxy = text.split("chain proxy_out {")[1].split("chain person_out")[0]
    assert "tcp dport { 80, 443 } accept" in proxy and "jump refuse" in proxy
    refuse = text.split("chain refuse {")[1]
    for proto in ("tcp", "udp", "sctp", "udplite"):
        assert proto in refuse
    assert (
        "add @refused4" in refuse and "add @refused6" in refuse and 'log prefix "kalkan-refused "' in refuse
    )
    assert "reject with icmpx admin-prohibited" in refuse


def test_group_extras_become_rules_for_the_group_members_only(monkeypatch):
    import agent.proxy.nftables as nft

    monkeypatch.setattr(
        nft, "_group_members", lambda group: ((1234,), (77,)) if group.name == "teacher" else ((), ())
    )
    bundle = PolicyBundle(
        groups=[Group(name="student"), Group(name="teacher", os_users=["t"], os_groups=["staff"])],
        network=NetworkSection(
            group_out={"teacher": ["tcp/22@10.0.0.5", "udp/1194"]}, proxy_ports=[80, 443, 8443]
        ),
    )
    config = config_from_policy(bundle, proxy_uid=990)
    text = render_ruleset(config)
    assert "meta skuid { 1234 } meta l4proto tcp ip daddr 10.0.0.5/32 th dport 22 accept" in text
    assert "meta skgid { 77 } meta l4proto udp th dport 1194 accept" in text
    assert "tcp dport { 80, 443, 8443 } accept" in text.split("chain proxy_out {")[1]
    with pytest.raises(RulesetError, match="does not define"):
        config_from_policy(
            PolicyBundle(network=NetworkSection(group_out={"nobody": ["tcp/22"]})), proxy_uid=1
        )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("icmp/1", "protocol"),
        ("tcp/0", "not a port"),
        ("tcp/90-80", "not a port"),
        ("tcp/22@nowhere", "not an IP"),
    ],
)
def test_bad_group_extras_are_named(entry, message):
    with pytest.raises(RulesetError, match=message):
        parse_extra(entry)


def test_ruleset_with_extras_passes_the_real_nft_check():
    from agent.platform.firewall import LinuxFirewall

    extras = (
        parse_extra("tcp/22@10.0.0.5", uids=(1001,), gids=(50,)),
        parse_extra("udp/1000-2000@fd00::/64", uids=(1002,)),
    )
    LinuxFirewall().check(
        render_ruleset(
            FirewallConfig(proxy_uid=990, dns_resolvers=("10.0.0.53",), extras=extras, exempt_uids=(5,))
        )
    )


def test_destination_check_cache_reverse_map_and_refresh():
    answers = {"a.test": frozenset({"10.0.0.1", "fd00::1"})}
    calls = []

    def lookup(name):
        calls.append(name)
        return answers.get(name, frozenset())

    now = [0.0]
    check = DestinationCheck(lookup=lookup, clock=lambda: now[0], ttl_s=60)
    assert check.addresses("a.test") is None and check.leads_to_cached("a.test", "10.0.0.1") is None
    assert asyncio.run(check.leads_to("a.test", "10.0.0.1")) is True
    assert check.leads_to_cached("a.test", "::ffff:10.0.0.1") is True  # one spelling per address
    assert check.name_of("fd00:0::1") == "a.test" and check.name_of("10.9.9.9") is None
    assert calls == ["a.test"]
    now[0] = 5.0
    # a mismatch is looked up once more (round-robin DNS may have moved on) before it is refused
    assert asyncio.run(check.leads_to("a.test", "10.0.0.2")) is False and calls == ["a.test", "a.test"]
    answers["a.test"] = frozenset({"10.0.0.2"})
    now[0] = 10.0
    assert asyncio.run(check.leads_to("a.test", "10.0.0.2")) is True
    now[0] = 100.0  # expired
    assert check.addresses("a.test") is None
    assert asyncio.run(check.leads_to("nx.test", "10.0.0.1")) is False
    assert normal_ip("[fd00::1]") == "fd00::1"


def test_plain_kind_and_same_ip():
    assert _plain_kind(b"GET / HTTP/1.1\r\n") == "http" and _plain_kind(b"CONNECT a:443 HTTP/1.1") == "http"
    assert _plain_kind(b"GE") == "more" and _plain_kind(b"X") == "more"
    for raw in (b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00\x0e\x38\x01", b"get / http/1.1", b"X" * 20):
        assert _plain_kind(raw) == "raw", raw
    assert _same_ip("::ffff:1.2.3.4", "1.2.3.4") and not _same_ip("1.2.3.4", "x")


def test_firewall_counters_become_rate_limited_bypass_events():
    fw = FakeFirewall()
    fw.install("table inet kalkan {}")
    fw.elements["refused4"] = [
        {
            "elem": {
                "val": {"concat": [0, "udp", "203.0.113.9", 51820]},
                "counter": {"packets": 3, "bytes": 90},
            }
        },
        {"elem": {"val": {"concat": [0, "icmp", "203.0.113.9", 0]}, "counter": {"packets": 1, "bytes": 84}}},
        {"elem": {"val": {"concat": [0, "udp", "203.0.113.9", 443]}, "counter": {"packets": 9, "bytes": 9}}},
        {"elem": {"val": {"concat": [0, "udp", "224.0.0.251", 5353]}, "counter": {"packets": 9, "bytes": 9}}},
    ]
    counts = read_refused(fw)
    assert RefusedCount(0, "udp", "203.0.113.9", 51820, 3) in counts
    assert RefusedCount(0, "icmp", "203.0.113.9", None, 1) in counts
    watch = RefusedWatch()
    events = watch.poll(counts)
    assert [(user, data["dst_port"], data["occurrences"]) for user, data in events] == [
        ("root", 51820, 3),
        ("root", None, 1),
    ]  # QUIC fallback and mDNS are no one's attempt
    assert all(data["kind"] == "refused" and "content" not in data for _, data in events)
    assert watch.poll(counts) == []  # nothing grew
    fw.elements["refused4"][0]["elem"]["counter"]["packets"] = 10
    [(_, grown)] = watch.poll(read_refused(fw))
    assert grown["occurrences"] == 7


def test_site_categories_apply_in_the_proxy_as_in_kalkan_filter_check(tmp_path):
    """The school's own categorisation: the proxy's engine and `kalkan-filter check` decide alike
    (one code path, filters.index.index_for_policy)."""
    import json
    import subprocess
    import sys
    import time

    from agent.proxy.engine import Engine
    from policy_server.protocol import FilteringSection, LessonMode

    bundle = PolicyBundle(
        filtering=FilteringSection(
            unsupervised={"student": LessonMode.open},
            site_categories={"own.example": ["games"], "x.example/Chat": ["social"]},
            category_actions={"student": {"games": "block", "social": "block"}},
        )
    )
    raw = bundle.model_dump(mode="json")
    engine = Engine.from_bundle(raw)
    when = time.time() // 60 * 60 + 30
    urls = [
        "http://own.example/",
        "http://www.own.example/x",
        "http://x.example/chat/room",
        "http://x.example/other",
        "http://other.example/",
    ]
    proxy = [
        engine.decide(u, group="student", user=None, seat=None, room=None, when=when).allowed for u in urls
    ]
    assert proxy == [False, False, False, True, True]
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(raw))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "filters.cli",
            "check",
            "--policy",
            str(policy),
            "--group",
            "student",
            "--json",
            *urls,
        ],
        capture_output=True,
        text=True,
    )
    cli = [json.loads(line)["action"] == "allow" for line in out.stdout.splitlines()]
    assert cli == proxy, out.stderr


def test_addresses_a_name_had_a_moment_ago_stay_valid():
    """Rotating CDN answers: the browser may still use the address the resolver gave before."""
    answers = {"cdn.test": frozenset({"10.0.0.1"})}
    now = [0.0]
    check = DestinationCheck(
        lookup=lambda name: answers.get(name, frozenset()), clock=lambda: now[0], ttl_s=60
    )
    assert asyncio.run(check.leads_to("cdn.test", "10.0.0.1"))
    answers["cdn.test"] = frozenset({"10.0.0.2"})
    now[0] = 100.0  # expired: looked up again, the answer moved on
    assert asyncio.run(check.leads_to("cdn.test", "10.0.0.2"))
    assert check.leads_to_cached("cdn.test", "10.0.0.1") is True  # still valid, resolved 100 s ago
    now[0] = 800.0
    answers["cdn.test"] = frozenset({"10.0.0.3"})
    assert asyncio.run(check.leads_to("cdn.test", "10.0.0.3"))
    now[0] = 1500.0  # the old answers are long gone
    answers["cdn.test"] = frozenset({"10.0.0.4"})
    assert not asyncio.run(check.leads_to("cdn.test", "10.0.0.1"))
