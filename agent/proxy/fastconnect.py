"""A `CONNECT` on the explicit proxy port answered without mitmproxy's HTTP layer.

Why: in mitmproxy a CONNECT goes through the HTTP layer, an HTTP stream and a flow with its
`requestheaders`/`http_connect`/`http_connected` hooks before the "200" leaves — most of the
time a passed-through HTTPS page waits in the proxy (`benchmarks/proxy/passthrough_page.py`).
A browser's CONNECT is one well-formed head and nothing else, so when the first bytes of a
connection to the explicit port are exactly that (`parse_connect`), the addon answers it
itself (`AnsweredConnect`) and hands the tunnel's content to a fresh `NextLayer`, the same
one mitmproxy's HTTP stream would have made: the ClientHello is then decided exactly as
before (pass through → Kalkan's relay; intercept → mitmproxy's TLS and HTTP layers, chosen
from the bytes as for any tunnel).

Anything else takes mitmproxy's path unchanged: a head in pieces, a body or bytes after the
head, an odd request line or header, a port outside `network.proxy_ports` (refused and
reported there, `http_connect`), any method but CONNECT.
"""

from __future__ import annotations

from mitmproxy.net.http import url as mitm_url
from mitmproxy.proxy import commands, events, layer

MAX_HEAD = 8192
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


def parse_connect(data: bytes) -> tuple[str, int, bytes] | None:
    """(host, port, HTTP version) of a complete, plain CONNECT head that is all of `data`."""
    if not data.startswith(b"CONNECT ") or len(data) > MAX_HEAD or not data.endswith(b"\r\n\r\n"):
        return None
    lines = data[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in _VERSIONS:
        return None
    for line in lines[1:]:
        name, colon, _ = line.partition(b":")
        if not colon or not name or not name.isascii() or b" " in name or b"\t" in name or b"\n" in line:
            return None  # folded or malformed headers: mitmproxy's parser decides
        if name.lower() in (b"content-length", b"transfer-encoding"):
            return None
    try:
        host, port = mitm_url.parse_authority(parts[1], check=True)
    except ValueError:
        return None
    if not port:
        return None
    return host, port, parts[2]


class AnsweredConnect(layer.Layer):
    """The CONNECT is answered ("200"); every later event goes to the tunnel's `NextLayer`."""

    def __init__(self, context, version: bytes, *, answered: bool = False) -> None:
        super().__init__(context)
        self.version = version
        self.answered = answered  # by the front listener (agent/proxy/front.py): the bytes are the tunnel's
        self.child: layer.Layer | None = None

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self.child is None:
            if isinstance(event, events.Start):
                return
            # the replayed event that carried the CONNECT head: answer it, open the tunnel
            if not self.answered:
                answer = self.version + b" 200 Connection established\r\n\r\n"
                yield commands.SendData(self.context.client, answer)
            self.child = layer.NextLayer(self.context)
            self._handle_event = self.child.handle_event  # type: ignore[method-assign]
            yield from self.child.handle_event(events.Start())
            if isinstance(event, events.DataReceived) and not self.answered:
                return
        yield from self.child.handle_event(event)
