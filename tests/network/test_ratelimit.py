from __future__ import annotations

from agent.network.detectors import Finding
from agent.network.ratelimit import RateLimiter


def finding(mac: str = "02:66:00:00:00:01") -> Finding:
    return Finding("net.arp_spoof", ("net.arp_spoof", "10.0.0.1", mac), {"gateway_ip": "10.0.0.1"})


def test_a_storm_becomes_one_event_now_and_one_summary_later():
    limiter = RateLimiter(interval_s=60)
    out = []
    for i in range(500):
        out += limiter.offer(finding(), now=i * 0.01)
    assert [e.data["occurrences"] for e in out] == [1]
    later = limiter.flush(now=61)
    assert [e.data["occurrences"] for e in later] == [499]
    assert limiter.flush(now=200) == []
    # quiet for an interval: the next one goes out at once again
    assert [e.data["occurrences"] for e in limiter.offer(finding(), now=300)] == [1]


def test_force_flush_sends_what_is_pending():
    limiter = RateLimiter(interval_s=60)
    limiter.offer(finding(), 0)
    limiter.offer(finding(), 1)
    limiter.offer(finding(), 2)
    assert [e.data["occurrences"] for e in limiter.flush(3, force=True)] == [2]


def test_many_distinct_keys_share_an_overflow_slot():
    limiter = RateLimiter(interval_s=60, max_keys=4)
    out = []
    for i in range(100):
        out += limiter.offer(finding(f"02:66:00:00:00:{i:02x}"), now=float(i) / 100)
    out += limiter.flush(61)
    assert len(out) == 4 + 1 + 1  # four keys, then the overflow once at once and once as a summary
    assert sum(e.data["occurrences"] for e in out) == 100
