"""The server name (SNI) of a TLS ClientHello, read cheaply and strictly.

Why not mitmproxy's `parse_client_hello`: it parses the whole ClientHello with a generated
(kaitai) parser, ~200 µs per connection on this machine, which is most of what the addon
added to a passed-through connection.  The addon only needs the server name to decide, so this
reads the record with `struct` in a few microseconds.

Strict on purpose: the answer is trusted to decide what passes untouched (domain fronting:
the SNI is what the origin sees).  Anything unusual — the hello spread over several records,
a length that does not add up, two server_name extensions, more than one name, a name that is
not a plain host name — gives `UNSURE`, and the caller lets mitmproxy's full TLS layer parse
the hello and decide at `tls_clienthello` as before.  When this returns a name it is the
name mitmproxy's `ClientHello.sni` would give for the same bytes.
"""

from __future__ import annotations

import struct

from mitmproxy.net import check

UNSURE = object()  # not read here: let mitmproxy's TLS layer parse the ClientHello
_HANDSHAKE, _CLIENT_HELLO, _SERVER_NAME, _ALPN, _HOST_NAME = 0x16, 0x01, 0x0000, 0x0010, 0


def client_hello_sni(data: bytes) -> str | None | object:
    """The ClientHello's server name; None when the hello (complete, well formed) names none;
    `UNSURE` when the bytes are not one complete, well-formed ClientHello record."""
    try:
        return _read(memoryview(data))
    except (struct.error, IndexError, ValueError):
        return UNSURE


def _read(data: memoryview) -> str | None | object:
    if len(data) < 9 or data[0] != _HANDSHAKE or data[1] != 3 or data[2] > 3:
        return UNSURE
    (record_length,) = struct.unpack_from("!H", data, 3)
    record = data[5:]
    if len(record) != record_length or record[0] != _CLIENT_HELLO:  # exactly one record, all here
        return UNSURE
    hello_length = int.from_bytes(record[1:4], "big")
    if hello_length + 4 != record_length:  # the hello spans records, or a record holds more
        return UNSURE
    body = record[4:]
    pos = 2 + 32  # client_version, random
    pos += 1 + body[pos]  # session_id
    (ciphers,) = struct.unpack_from("!H", body, pos)
    pos += 2 + ciphers
    pos += 1 + body[pos]  # compression methods
    if pos == len(body):
        return None  # no extensions at all (an old client): no name
    (extensions_length,) = struct.unpack_from("!H", body, pos)
    pos += 2
    if pos + extensions_length != len(body):
        return UNSURE
    name: str | None = None
    seen_server_name = False
    while pos < len(body):
        kind, length = struct.unpack_from("!HH", body, pos)
        pos += 4
        if pos + length > len(body):
            return UNSURE
        if kind == _SERVER_NAME:
            if seen_server_name:
                return UNSURE
            seen_server_name = True
            name = _server_name(body[pos:pos + length])
            if name is UNSURE:
                return UNSURE
        elif kind == _ALPN and not _alpn_complete(body[pos:pos + length]):
            return UNSURE  # mitmproxy's parser rejects the hello: so must we be unsure
        pos += length
    return name


def _server_name(ext: memoryview) -> str | object:
    (list_length,) = struct.unpack_from("!H", ext, 0)
    if list_length + 2 != len(ext) or list_length < 3:
        return UNSURE
    name_type = ext[2]
    (name_length,) = struct.unpack_from("!H", ext, 3)
    if name_type != _HOST_NAME or 5 + name_length != len(ext):  # exactly one name, a host name
        return UNSURE
    host = bytes(ext[5:5 + name_length])
    if not check.is_valid_host(host):
        return UNSURE
    return host.decode("ascii")


def _alpn_complete(ext: memoryview) -> bool:
    """The ALPN extension as mitmproxy's parser reads it (the only other extension it parses): a
    2-byte length, then protocol names (1-byte length + bytes) to the extension's end."""
    if len(ext) < 2:
        return False
    pos = 2
    while pos < len(ext):
        pos += 1 + ext[pos]
    return pos == len(ext)
