"""The CONNECT the addon answers itself (agent/proxy/fastconnect.py): only a complete, plain
head is taken; everything else is left to mitmproxy's HTTP layer (which refuses and reports)."""

from __future__ import annotations

import pytest

from agent.proxy.fastconnect import parse_connect


@pytest.mark.parametrize(("head", "expected"), [
    (b"CONNECT news.test:443 HTTP/1.1\r\nHost: news.test:443\r\n\r\n", ("news.test", 443, b"HTTP/1.1")),
    (b"CONNECT news.test:443 HTTP/1.0\r\n\r\n", ("news.test", 443, b"HTTP/1.0")),
    (b"CONNECT 203.0.113.9:443 HTTP/1.1\r\nHost: 203.0.113.9:443\r\nUser-Agent: x\r\n\r\n",
     ("203.0.113.9", 443, b"HTTP/1.1")),
    (b"CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: [fd00::1]:443\r\n\r\n", ("fd00::1", 443, b"HTTP/1.1")),
    (b"CONNECT xn--80ak6aa92e.com:443 HTTP/1.1\r\n\r\n",
     ("\u0430\u0440\u0440\u04cf\u0435.com", 443, b"HTTP/1.1")),  # IDNA decoded as mitmproxy does
])
def test_a_plain_connect_is_read(head, expected):
    assert parse_connect(head) == expected


@pytest.mark.parametrize("head", [
    b"CONNECT news.test:443 HTTP/1.1\r\nHost: news.test:443\r\n",  # not complete yet
    b"CONNECT news.test:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x00\x05hello",  # bytes after the head
    b"CONNECT news.test HTTP/1.1\r\n\r\n",  # no port
    b"CONNECT news.test:0 HTTP/1.1\r\n\r\n",
    b"CONNECT news.test:99999 HTTP/1.1\r\n\r\n",
    b"CONNECT news.test:443 HTTP/2\r\n\r\n",
    b"CONNECT  news.test:443 HTTP/1.1\r\n\r\n",  # two spaces
    b"CONNECT news.test:443 HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
    b"CONNECT news.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
    b"CONNECT news.test:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"CONNECT news.test:443 HTTP/1.1\r\nno colon here\r\n\r\n",
    b"CONNECT news.test:443 HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"CONNECT bad_host!:443 HTTP/1.1\r\n\r\n",
    b"GET http://news.test/ HTTP/1.1\r\nHost: news.test\r\n\r\n",
    b"connect news.test:443 HTTP/1.1\r\n\r\n",
    b"CONNECT news.test:443 HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
])
def test_anything_unusual_is_left_to_mitmproxy(head):
    assert parse_connect(head) is None
