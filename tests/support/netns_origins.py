"""The "internet" of the netns lab (tests/support/netns_lab.py): run inside its own namespace.

Usage: python netns_origins.py CERT KEY PLAN_JSON

* web servers, HTTP on 80 and HTTPS on 443 (and HTTP on 8080, which the seat's table lets
  only system accounts reach), on every address of ``plan["web"]``; each answer
  is a small HTML page naming the Host it was asked for (``ORIGIN OK <host>``), so a test tells
  an origin's answer from the proxy's block page;
* a DNS server (UDP 53) on ``plan["resolver"]``: A records from ``plan["zone"]``, NXDOMAIN for
  every other name (AAAA: no data), the seats' only resolver.
"""

import http.server
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading


class Page(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        host = (self.headers.get("host") or "").split(":")[0]
        body = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>origin {host}</title></head>"
            f"<body><h1 id='origin'>ORIGIN OK {host}</h1><p>{self.path}</p></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args):
        pass


def web(address, port, context=None):
    cls = type("S", (http.server.ThreadingHTTPServer,), {"daemon_threads": True, "allow_reuse_address": True})
    server = cls((address, port), Page)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


class Dns(socketserver.BaseRequestHandler):
    zone: dict = {}

    def handle(self):
        packet, sock = self.request
        try:
            ident, flags = struct.unpack_from("!HH", packet, 0)
            labels, pos = [], 12
            while packet[pos]:
                labels.append(packet[pos + 1 : pos + 1 + packet[pos]].decode("ascii", "replace"))
                pos += 1 + packet[pos]
            pos += 1
            qtype, _qclass = struct.unpack_from("!HH", packet, pos)
        except (struct.error, IndexError):
            return
        name = ".".join(labels).lower().rstrip(".")
        address = self.zone.get(name)
        answers = [socket.inet_aton(address)] if address and qtype == 1 else []
        rcode = 0 if address else 3
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode | (flags & 0x0100), 1, len(answers), 0, 0)
        body = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + rdata for rdata in answers)
        sock.sendto(header + packet[12 : pos + 4] + body, self.client_address)


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    cert, key, plan_file = sys.argv[1:4]
    with open(plan_file) as f:
        plan = json.load(f)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for address in plan["web"]:
        serve(web(address, 80))
        serve(web(address, 443, context))
        serve(web(address, 8080))  # a port the proxy does not take: only system accounts reach it
    serve(socketserver.ThreadingUDPServer((plan["resolver"], 53), type("D", (Dns,), {"zone": plan["zone"]})))
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
