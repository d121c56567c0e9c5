"""The next certificate's announcement: `Kalkan-Next-Pin: sha256:<hex>` on every API answer.

A plain ASGI middleware (no buffering, like policy_server/security/headers.py): the header is
added to the start of every `/api/` answer while `tls/server.next.crt` exists, so each agent
reads it within seconds (its uplink posts events every few seconds, its policy poll and push
stream answer too).  Agents believe it only because they read it over the connection whose
certificate they pin (agent/tls.py PinSet); an older agent ignores a header it does not know.

The file is looked at (one `stat`) per answer and read again only when it changed, so a
`kalkan-server tls rotate` is announced by a running server without a restart.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from policy_server.certs.rotation import CertFiles, fingerprint_or_none

HEADER = b"kalkan-next-pin"


class NextPin:
    """The next certificate's fingerprint, re-read when its file changes."""

    def __init__(self, files: CertFiles) -> None:
        self.cert, self.key = files.next
        self._seen: tuple[int, int] | None = None
        self._value: bytes | None = None
        self._lock = threading.Lock()

    def header(self) -> bytes | None:
        try:
            st = os.stat(self.cert)
        except OSError:
            self._seen, self._value = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            with self._lock:
                fingerprint = fingerprint_or_none(self.cert) if Path(self.key).exists() else None
                self._value = f"sha256:{fingerprint}".encode() if fingerprint else None
                self._seen = stamp
        return self._value


class AnnounceNextPin:
    def __init__(self, app, *, files: CertFiles) -> None:
        self.app = app
        self.next_pin = NextPin(files)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith("/api/"):
            return await self.app(scope, receive, send)

        async def send_with_pin(message):
            if message["type"] == "http.response.start":
                value = self.next_pin.header()
                if value is not None:
                    message = {**message, "headers": [*message.get("headers", ()), (HEADER, value)]}
            await send(message)

        return await self.app(scope, receive, send_with_pin)
