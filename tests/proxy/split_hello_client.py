"""Test helper, run as a test account: one HTTPS request through the proxy's CONNECT tunnel with
the TLS ClientHello sent in two pieces (the proxy cannot read the name from the first piece).

    python3 split_hello_client.py PROXY_PORT HOST CAFILE

Prints the issuer's common name of the certificate the client saw and the HTTP status line.
Standard library only: it runs under the system python3 as an unprivileged account.
"""

import socket
import ssl
import sys
import time

port, host, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
reply = b""
while b"\r\n\r\n" not in reply:
    reply += sock.recv(4096)
context = ssl.create_default_context(cafile=cafile)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
first_flight = True


def pump() -> None:
    """Send what TLS wrote; the first flight in two writes, apart, so they arrive apart."""
    global first_flight
    data = outgoing.read()
    if data and first_flight:
        first_flight = False
        sock.sendall(data[:3])
        time.sleep(0.3)
        data = data[3:]
    if data:
        sock.sendall(data)


while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        pump()
        incoming.write(sock.recv(65536) or b"")
pump()
issuer = dict(item[0] for item in tls.getpeercert()["issuer"])["commonName"]
tls.write(f"GET /split HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
pump()
answer = b""
while b"\r\n" not in answer:
    try:
        answer += tls.read(65536)
    except ssl.SSLWantReadError:
        incoming.write(sock.recv(65536) or b"")
print(issuer)
print(answer.split(b"\r\n", 1)[0].decode())
