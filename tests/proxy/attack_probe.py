"""What a determined student runs (as their own uid) in the adversarial suite.

    attack_probe.py tcp HOST PORT [SEND]        connect, optionally send SEND, print what comes back
    attack_probe.py udp HOST PORT               one datagram, print the answer
    attack_probe.py udplite HOST PORT           the same over UDP-Lite
    attack_probe.py icmp HOST                   one ICMP echo (unprivileged ping socket)
    attack_probe.py rawproto HOST PROTO         one raw IP packet of protocol PROTO (needs CAP_NET_RAW)
    attack_probe.py connect PROXYPORT TARGET [SEND]   CONNECT TARGET through 127.0.0.1:PROXYPORT, then SEND
    attack_probe.py sendclose HOST PORT SEND    connect, send SEND and close at once (no answer read):
                                                the socket is gone before the proxy asks who owns it
    attack_probe.py helloclose HOST PORT NAME   the same with a real TLS ClientHello for NAME

SEND may use \\r\\n escapes.  Prints what was received, or ``FAILED <why>``; never raises.
"""

import socket
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def unescape(text):
    return text.encode().decode("unicode_escape").encode("latin-1")


def read_all(sock, limit=5.0):
    sock.settimeout(1.5)
    chunks, deadline = [], time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def client_hello(name):
    """The ClientHello Python's TLS would send to `name` (nothing sent anywhere)."""
    import ssl

    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:  # it waits for the server's answer: the hello is written
        pass
    return outgoing.read()


def main(argv):
    kind = argv[0]
    if kind == "tcp":
        host, port = argv[1], int(argv[2])
        sock = socket.create_connection((host, port), timeout=4)
        if len(argv) > 3:
            sock.sendall(unescape(argv[3]))
        return read_all(sock)
    if kind in ("sendclose", "helloclose"):
        host, port = argv[1], int(argv[2])
        payload = client_hello(argv[3]) if kind == "helloclose" else unescape(argv[3])
        sock = socket.create_connection((host, port), timeout=4)
        sock.sendall(payload)
        sock.close()
        return b"SENT"
    if kind in ("udp", "udplite"):
        host, port = argv[1], int(argv[2])
        sock = socket.socket(family(host), socket.SOCK_DGRAM, 136 if kind == "udplite" else 0)
        sock.settimeout(2)
        sock.sendto(b"probe", (host, port))
        return sock.recvfrom(4096)[0]
    if kind == "icmp":
        host = argv[1]
        v6 = ":" in host
        sock = socket.socket(
            family(host), socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
        )
        sock.settimeout(2)
        sock.sendto((b"\x80" if v6 else b"\x08") + b"\0\0\0\0\x01\0\x01" + b"TUNNEL-PAYLOAD", (host, 0))
        return b"ICMP-REPLY " + sock.recvfrom(4096)[0][8:]
    if kind == "rawproto":
        host, proto = argv[1], int(argv[2])
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        sock.settimeout(2)
        sock.sendto(b"PROBE-RAW", (host, 0))
        while True:
            packet = sock.recvfrom(4096)[0]
            body = packet[(packet[0] & 0x0F) * 4 :]
            if body.startswith(b"REPLY"):
                return b"RAW-PROTO-" + body
    if kind == "connect":
        port, target = int(argv[1]), argv[2]
        sock = socket.create_connection(("127.0.0.1", port), timeout=4)
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        sock.settimeout(4)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                break
            head += data
        if len(argv) > 3 and head.startswith(b"HTTP/1.1 200"):
            sock.sendall(unescape(argv[3]))
            return head + read_all(sock)
        return head
    raise SystemExit(f"unknown probe {kind}")


if __name__ == "__main__":
    try:
        out = main(sys.argv[1:])
        print(out.decode("latin-1").strip() or "EMPTY")
    except Exception as exc:  # noqa: BLE001 - the probe reports, never raises
        print("FAILED", type(exc).__name__, exc)
