"""The addon's fast SNI reader answers what mitmproxy's full ClientHello parser answers, or
says it is not sure (then mitmproxy's TLS layer parses and decides, as before)."""

import ssl
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.proxy.layers.tls import parse_client_hello

from agent.proxy.sni import UNSURE, client_hello_sni


def real_hello(server_hostname: str | None, *, tls12_only: bool = False) -> bytes:
    """The first flight of Python's (OpenSSL's) TLS client: one ClientHello record."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA store needed: only the first flight
    context.check_hostname = False
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def mitmproxy_sni(data: bytes):
    hello = parse_client_hello(data)
    assert hello is not None, "mitmproxy found the hello incomplete where we were sure"
    return hello.sni


def test_real_client_hellos_give_mitmproxys_answer() -> None:
    for data in (real_hello("news.test"), real_hello("www.Google.com", tls12_only=True), real_hello(None)):
        ours = client_hello_sni(data)
        assert ours is not UNSURE
        assert ours == mitmproxy_sni(data)
    assert client_hello_sni(real_hello("news.test")) == "news.test"
    assert client_hello_sni(real_hello(None)) is None


def _with_extensions(data: bytes, extra: bytes) -> bytes:
    """`data` (one ClientHello record) with `extra` extension bytes appended, lengths fixed."""
    body = bytearray(data[9:])
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + struct.unpack_from("!H", body, pos)[0]
    pos += 1 + body[pos]
    (ext_len,) = struct.unpack_from("!H", body, pos)
    struct.pack_into("!H", body, pos, ext_len + len(extra))
    body += extra
    hello = b"\x01" + len(body).to_bytes(3, "big") + bytes(body)
    return data[:3] + struct.pack("!H", len(hello)) + hello


def _sni_extension(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(bytes([name_type]) + struct.pack("!H", len(n)) + n for n in names)
    listed = struct.pack("!H", len(entries)) + entries
    return struct.pack("!HH", 0, len(listed)) + listed


def test_unusual_hellos_are_left_to_mitmproxy() -> None:
    with_sni, without = real_hello("news.test"), real_hello(None)
    unusual = {
        "a second server_name extension (fronting attempt)":
            _with_extensions(with_sni, _sni_extension(b"bad.test")),
        "two names in one extension": _with_extensions(without, _sni_extension(b"news.test", b"bad.test")),
        "a name that is not a host name": _with_extensions(without, _sni_extension(b"bad host!")),
        "a name of another type": _with_extensions(without, _sni_extension(b"news.test", name_type=1)),
        "truncated (the rest of the hello still to come)": with_sni[:-10],
        "one more byte after the record": with_sni + b"\x16",
        "not a handshake record": b"\x17" + with_sni[1:],
        # mitmproxy's parser reads ALPN too, and rejects a broken one (found by the fuzz test below)
        "an ALPN list that overruns its extension":
            _with_extensions(without, struct.pack("!HH", 16, 5) + b"\x00\x03\x08h2"),
        "empty": b"",
    }
    for why, data in unusual.items():
        assert client_hello_sni(data) is UNSURE, why
    good_alpn = _with_extensions(with_sni, struct.pack("!HH", 16, 5) + b"\x00\x03\x02h2")
    assert client_hello_sni(good_alpn) == "news.test" == mitmproxy_sni(good_alpn)


def test_hello_split_over_two_records_is_left_to_mitmproxy() -> None:
    data = real_hello("news.test")
    hello = data[5:]
    first, second = hello[:40], hello[40:]
    split = (data[:3] + struct.pack("!H", len(first)) + first
             + data[:3] + struct.pack("!H", len(second)) + second)
    assert client_hello_sni(split) is UNSURE
    assert mitmproxy_sni(split) == "news.test"  # mitmproxy reads it; its TLS layer decides then


_SAMPLES = [real_hello("news.test"), real_hello(None), real_hello("a.b.example", tls12_only=True)]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_whenever_sure_it_agrees_with_mitmproxy(data) -> None:
    """Random corruption of real hellos: a sure answer is always mitmproxy's answer."""
    base = bytearray(data.draw(st.sampled_from(_SAMPLES)))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(base) - 1))
        base[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    sample = bytes(base[:cut]) if data.draw(st.booleans()) else bytes(base)
    ours = client_hello_sni(sample)
    if ours is UNSURE:
        return
    assert ours == mitmproxy_sni(sample)
