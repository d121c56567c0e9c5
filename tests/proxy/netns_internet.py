"""The "internet" of the adversarial suite: run inside its own network namespace.

Usage: python netns_internet.py CERT KEY ZONE_JSON

* web servers (HTTP 80, HTTPS 443) on the "good" and "bad" addresses; every answer says which
  address served it (``via=…``) and which Host it was asked for, so a test can tell a request
  that reached a server it must not reach; and they remember every request (``GET /__seen__``
  lists them) for the requests whose sender no longer reads an answer;
* the attacker's own server on its addresses: a raw TCP echo that first sends a banner on
  22, 80, 443, 853, 3128 and 5222 (an SSH server, a foreign proxy, a raw tunnel), and UDP
  echoes on 53, 443, 5353 and 51820 (a foreign resolver, QUIC, mDNS, WireGuard);
* a UDP-Lite echo and a raw-IP (SCTP, protocol 132) echo on the attacker's IPv4 address;
* a real DNS server (A/AAAA from ZONE_JSON, NXDOMAIN else) on the resolver's addresses, UDP 53.
"""

import http.server
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading

UDPLITE = 136
SCTP = 132


SEEN: list[str] = []  # every request served, as "via=ADDRESS PATH"; GET /__seen__ lists them


class Page(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        local = self.connection.getsockname()[0]
        if self.path == "/__seen__":  # a test's question: which requests reached a server at all
            body = "\n".join(SEEN).encode() + b"\n"
        else:
            SEEN.append(f"via={local} {self.path}")
            body = f"ORIGIN host={self.headers.get('host')} path={self.path} via={local}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def http_server(address, port, context=None):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    cls = type("S", (http.server.ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
    server = cls((address, port), Page)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


class RawEcho(socketserver.BaseRequestHandler):
    def handle(self):
        local = self.request.getsockname()[0]
        self.request.sendall(f"RAW-SERVER via={local}\n".encode())
        self.request.settimeout(5)
        try:
            while True:
                data = self.request.recv(4096)
                if not data:
                    return
                SEEN.append(f"raw via={local} {data[:64]!r}")
                self.request.sendall(b"RAW-ECHO " + data)
        except OSError:
            return


class UdpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(b"UDP-ECHO " + data, self.client_address)


def tcp_server(address, port, handler):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    cls = type("T", (socketserver.ThreadingTCPServer,), {"address_family": family, "daemon_threads": True,
                                                          "allow_reuse_address": True})
    return cls((address, port), handler)


def udp_server(address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    cls = type("U", (socketserver.ThreadingUDPServer,), {"address_family": family, "daemon_threads": True})
    return cls((address, port), UdpEcho)


def udplite_echo(address, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, UDPLITE)
    sock.bind((address, port))
    while True:
        data, peer = sock.recvfrom(4096)
        sock.sendto(b"UDPLITE-ECHO " + data, peer)


def raw_proto_echo(proto):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
    while True:
        packet, peer = sock.recvfrom(4096)
        header = (packet[0] & 0x0F) * 4
        if packet[header:].startswith(b"PROBE"):
            sock.sendto(b"REPLY" + packet[header + 5:], peer)


# ------------------------------------------------------------------ DNS


def _name(packet, pos):
    labels = []
    while packet[pos]:
        length = packet[pos]
        labels.append(packet[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return ".".join(labels).lower(), pos + 1


class Dns(socketserver.BaseRequestHandler):
    zone: dict = {}

    def handle(self):
        packet, sock = self.request
        try:
            ident, flags = struct.unpack_from("!HH", packet, 0)
            name, pos = _name(packet, 12)
            qtype, qclass = struct.unpack_from("!HH", packet, pos)
        except (struct.error, IndexError):
            return
        question = packet[12:pos + 4]
        records = self.zone.get(name.rstrip("."))
        answers = []
        if records is not None:
            for address in records:
                if qtype == 1 and ":" not in address:
                    answers.append((1, socket.inet_pton(socket.AF_INET, address)))
                elif qtype == 28 and ":" in address:
                    answers.append((28, socket.inet_pton(socket.AF_INET6, address)))
        rcode = 0 if records is not None else 3
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode | (flags & 0x0100), 1, len(answers), 0, 0)
        body = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", kind, 1, 30, len(rdata)) + rdata
                        for kind, rdata in answers)
        sock.sendto(header + question + body, self.client_address)


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    cert, key, zone_file = sys.argv[1:4]
    plan = json.loads(open(zone_file).read())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for address in plan["web"]:
        serve(http_server(address, 80))
        serve(http_server(address, 443, context))
    for address in plan["attacker"]:
        for port in (22, 80, 443, 853, 3128, 5222):
            serve(tcp_server(address, port, RawEcho))
        for port in (53, 443, 5353, 51820):
            serve(udp_server(address, port))
    for address in plan["resolvers"]:
        handler = type("D", (Dns,), {"zone": plan["zone"]})
        serve(socketserver.ThreadingUDPServer((address, 53), handler))
    threading.Thread(target=udplite_echo, args=(plan["attacker"][0], 9999), daemon=True).start()
    threading.Thread(target=raw_proto_echo, args=(SCTP,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
