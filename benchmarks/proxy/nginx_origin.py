"""An HTTPS origin served by nginx, for the page benchmark (`passthrough_page.py --origin nginx`).

Why a second origin: the test rig's origin (tests/support/proxy_rig.py) is Python's threading
HTTP server, living in the benchmark's own process.  Its accepting thread and the threads that
serve earlier connections share one interpreter lock, so a page's connection is accepted late
while the previous page's thread is still finishing (measured on 2026-12-06, RESULTS.md "twelfth
session": in 71 of 200 Kalkan pages the accepting thread ran 420–530 µs after the proxy's dial,
each time 60–80 µs after a finishing thread let go).  How much of that a proxy pays depends on
when it dials, not on how fast it relays.  A web site's server is not like that; nginx (event
loop in C, one worker here) is, and is what most sites run.  Same certificate, same page size,
keep-alive as the Python origin.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.proxy_rig import free_port, wait_port

# as the Python origin answers a page's object (tests/support/proxy_rig.py, `_EchoHandler`)
BODY = ("<!doctype html><html><head><title>origin news.test</title></head>"
        "<body><h1 id='origin'>ORIGIN OK news.test</h1></body></html>")

CONF = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        tcp_nodelay on;
        location / {{
            default_type "text/html; charset=utf-8";
            return 200 "{body}";
        }}
    }}
}}
"""


class NginxOrigin:
    """nginx on 127.0.0.1:`https_port` with the leaf certificate the Python origin wrote into
    `folder` (leaf.pem, leaf.key)."""

    def __init__(self, folder: Path) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise RuntimeError("nginx is not installed: apt-get install nginx (install/apt-packages.txt)")
        prefix = folder / "nginx"
        prefix.mkdir(exist_ok=True)
        self.https_port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(CONF.format(prefix=prefix, port=self.https_port, cert=folder / "leaf.pem",
                                    key=folder / "leaf.key", body=BODY))
        self.proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.https_port, 10, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.close()
            log = prefix / "error.log"
            raise RuntimeError(f"nginx did not start ({exc}): "
                               f"{log.read_text()[-2000:] if log.exists() else ''}") from exc

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
