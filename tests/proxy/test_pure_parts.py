"""The proxy's pure parts: languages, pages, history, usage counts, ISUO sessions,
socket-owner lookup, the nftables ruleset text, the collector's view of an engine."""

from __future__ import annotations

import gc
import json
import os
import socket
import time
import weakref

import pytest

from agent.proxy.addon import freeze_startup_objects
from agent.proxy.engine import Engine
from agent.proxy.history import RecentPages
from agent.proxy.i18n import MESSAGES, RULES, pick_language
from agent.proxy.isuo import IsuoTracker
from agent.proxy.nftables import FirewallConfig, RulesetError, render_ruleset, system_resolvers
from agent.proxy.pages import BlockInfo, PageSet, RecentPage
from agent.proxy.subject import socket_owner_uid
from agent.proxy.usage import UsageCounter
from filters.decision import RULES as FILTER_RULES
from tests.proxy.conftest import base_bundle


@pytest.mark.parametrize(("header", "expected"), [
    (None, "ky"), ("", "ky"), ("ru-RU,ru;q=0.9", "ru"), ("en;q=0.3,ru;q=0.8", "ru"),
    ("de-DE,ky;q=0.1", "ky"), ("fr", "ky"), ("en-US", "en"), ("ru;q=0,en", "en"), ("ru;q=bad,en;q=0.5", "en"),
])
def test_pick_language(header, expected):
    assert pick_language(header, "ky") == expected


def test_every_message_in_three_languages():
    for table in (MESSAGES, RULES):
        for key, entry in table.items():
            assert set(entry) == {"ky", "ru", "en"} and all(entry.values()), key


def test_every_blocking_rule_of_the_filter_has_words():
    blocking = [r for r in FILTER_RULES if not r.endswith("allow_list") or "not_on" in r]
    missing = [r for r in blocking if r not in RULES and r not in ("default.allow", "lesson.allow_list")]
    assert not missing, f"block-page words missing for filter rules {missing}"


def test_block_page_escapes_and_names_categories():
    pages = PageSet(category_name=lambda c, lang: {"porn": "Порнография"}[c] if lang == "ru" else c)
    html = pages.block_page(BlockInfo(url='http://x.test/"><script>', host="x.test", categories=("porn",),
                                      rule="category", clauses=("000 §8.1",)), "ru")
    assert "<script>" not in html and "&#34;&gt;&lt;script&gt;" in html
    assert "Порнография" in html and "000 §8.1" in html and "Категория запрещена" in html


def test_report_page_lists_recent_pages():
    html = PageSet().report_page([RecentPage(url="http://a.test/1")], "en")
    assert 'value="http://a.test/1"' in html
    assert "No pages in the last 15 minutes." in PageSet().report_page([], "en")


def test_history_window_and_per_user():
    history = RecentPages(window_s=900, max_per_user=3)
    history.add("ali", "http://a/1", 0)
    history.add("ali", "http://a/2", 100)
    history.add("aigul", "http://b/1", 100)
    assert [p.url for p in history.recent("ali", 200)] == ["http://a/2", "http://a/1"]
    assert [p.url for p in history.recent("ali", 950)] == ["http://a/2"]  # the first fell out of 15 min
    for i in range(5):
        history.add("ali", f"http://c/{i}", 960)
    assert len(history.recent("ali", 960)) == 3
    assert [p.url for p in history.recent("aigul", 960)] == ["http://b/1"]


def test_usage_counts_domains_only():
    usage = UsageCounter(period_s=60, max_domains=2)
    assert usage.flush(0) is None
    for host in ("A.test.", "a.test", "b.test", "c.test"):
        usage.count(host, 10)
    assert not usage.due(50) and usage.due(70)
    flushed = usage.flush(70)
    assert flushed.counts == {"a.test": 2, "b.test": 1, "(other)": 1}
    assert usage.flush(80) is None


def test_isuo_sessions_start_and_end():
    tracker = IsuoTracker(idle_end_s=60)
    assert tracker.opened("t1", "emis.edu.gov.kg", 0).state == "start"
    assert tracker.opened("t1", "emis.edu.gov.kg", 5) is None  # same session, second connection
    tracker.closed("t1", "emis.edu.gov.kg", 10)
    assert tracker.expire(65) == []  # one connection still open
    tracker.closed("t1", "emis.edu.gov.kg", 20)
    assert tracker.expire(79) == []
    [(user, ended)] = tracker.expire(80)
    assert user == "t1" and ended.state == "end" and ended.ended_at.timestamp() == 20
    assert tracker.opened("t1", "emis.edu.gov.kg", 100).state == "start"
    assert [e.state for _, e in tracker.end_all(200)] == ["end"]


def test_socket_owner_is_found_for_both_families():
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        server = socket.socket(family)
        server.bind((host, 0))
        server.listen()
        client = socket.create_connection((host, server.getsockname()[1]))
        try:
            ip, port = client.getsockname()[:2]
            assert socket_owner_uid(ip, port) == os.geteuid()
        finally:
            client.close()
            server.close()
    assert socket_owner_uid("127.0.0.1", 1) is None


def test_ruleset_text():
    text = render_ruleset(FirewallConfig(proxy_uid=990, transparent_port=4000, dns_resolvers=("10.0.0.53",)))
    assert "meta skuid { 990 } return" in text and "redirect to :4000" in text
    assert "udp dport 443 drop" in text and "th dport 853 drop" in text
    assert "ip daddr != { 10.0.0.53 } drop" in text and "meta nfproto ipv6 drop" in text
    open_dns = render_ruleset(FirewallConfig(proxy_uid=990))
    assert "DNS is not restricted" in open_dns


@pytest.mark.parametrize(("config", "message"), [
    (FirewallConfig(proxy_uid=1, dns_resolvers=("dns.google",)), "not an IP address"),
    (FirewallConfig(proxy_uid=1, transparent_port=70000), "not a TCP port"),
])
def test_ruleset_bad_input(config, message):
    with pytest.raises(RulesetError, match=message):
        render_ruleset(config)


def test_system_resolvers(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver fe80::1%eth0\nsearch x\n")
    assert system_resolvers(conf) == ("10.1.1.1", "fe80::1")


def test_a_replaced_engine_leaves_no_cyclic_garbage():
    """What makes freezing the startup objects safe (addon.freeze_startup_objects): a policy
    reload drops the old engine by reference count, so a frozen engine is never garbage the
    collector would have had to find."""
    raw = json.loads(base_bundle().model_dump_json())
    gc.collect()
    engine = Engine.from_bundle(raw, index=None)
    engine.host_verdict("news.test", group="student", user=None, seat=None, room=None, when=time.time())
    engine.decide("http://news.test/page", group="student", user=None, seat=None, room=None, when=time.time())
    alive = weakref.ref(engine)
    del engine
    assert alive() is None  # freed at once, not left for the collector
    assert gc.collect() == 0


def test_startup_objects_are_frozen_out_of_the_collectors_walk():
    alive_at_start = [object()]  # a container the collector tracks
    assert any(found is alive_at_start for found in gc.get_objects())
    try:
        assert freeze_startup_objects() > 1000
        # frozen: in no generation the collector walks any more
        assert not any(found is alive_at_start for found in gc.get_objects())
    finally:
        gc.unfreeze()


def test_is_ip_answers_as_ipaddress_does_without_trying_names():
    """The destination check's `is_ip` skips `ipaddress` (two exceptions) for a name; its answer
    is still exactly `ipaddress`'s for addresses, names and the spellings in between."""
    import ipaddress

    from agent.proxy.destcheck import is_ip

    def reference(text: str) -> bool:
        try:
            ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            return False
        return True

    cases = ["1.2.3.4", "[fd00::1]", "::ffff:1.2.3.4", "fe80::1%eth0", "ff::", "01.2.3.4", "1.2.3",
             "1.2.3.4.", "256.1.1.1", "1e100.net", "news.test", "", "[", "١.٢.٣.٤", "1.2.3.4 ", "12345",
             "localhost", "a:b", "::", "[::1]:443", "0x7f.0.0.1"]
    assert [is_ip(c) for c in cases] == [reference(c) for c in cases]
    assert is_ip("10.0.0.1") and is_ip("[::1]") and not is_ip("news.test")


def test_a_remnant_listed_first_does_not_hide_the_live_socket(tmp_path):
    """/proc/net/tcp may list a time-wait remnant of an earlier connection from the same address
    and port (to another destination) before the live socket: the live one's owner is the answer;
    with only the remnant, nobody's."""
    from agent.proxy.subject import _candidates

    table, local = next(iter(_candidates("127.0.0.1", 45932)))
    head = "  sl  local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode\n"
    remnant = f"   0: {local} 0100007F:1F90 06 00000000:00000000 03:00000000 00000000     0        0 0 3\n"
    live = f"   1: {local} 0100007F:2328 01 00000000:00000000 00:00000000 00000000  1002        0 4242 1\n"
    (tmp_path / table).write_text(head + remnant + live)
    assert socket_owner_uid("127.0.0.1", 45932, proc_net=tmp_path) == 1002
    (tmp_path / table).write_text(head + remnant)
    assert socket_owner_uid("127.0.0.1", 45932, proc_net=tmp_path) is None
