"""The "internet" of the network-namespace test: run inside its own namespace.

HTTP on 80 and HTTPS on 443 (both address families), a UDP echo on 443 (QUIC stand-in),
a DNS stand-in on UDP 53 (echoes the query back), a TCP "foreign proxy" on 3128 and a
DoT stand-in on TCP 853.  Usage: python netns_servers.py CERT KEY
"""

import http.server
import socket
import socketserver
import ssl
import sys
import threading


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"ORIGIN {self.headers.get('host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Banner(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"FOREIGN SERVICE\n")


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    cert, key = sys.argv[1], sys.argv[2]
    serve(Server6(("::", 80), Page))
    secure = Server6(("::", 443), Page)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    serve(secure)
    for port in (3128, 853):
        tcp = socketserver.ThreadingTCPServer(("0.0.0.0", port), Banner)
        serve(tcp)
    for port in (443, 53):
        serve(socketserver.ThreadingUDPServer(("0.0.0.0", port), Echo))
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
