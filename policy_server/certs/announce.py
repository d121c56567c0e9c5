"""The next certificate's announcement: `Kalkan-Next-Pin: sha256:<hex>` on every API answer.

A plain ASGI middleware (no buffering, like policy_server/security/headers.py): the header is
added to the start of every `/api/` answer, so each agent reads it within seconds (its uplink
posts events every few seconds, its policy poll and push stream answer too).  It names

* `tls/server.next.crt` while it exists (`tls rotate` … `tls activate`);
* after `tls activate` and before the restart, `tls/server.crt` when it is no longer the
  certificate this process serves (policy_server/certs/served.py), so a seat that comes on
  in between still learns it.

`Kalkan-Withdrawn-Pin` names a next certificate `tls cancel` withdrew (`server.withdrawn.crt`):
a seat holding it as its next pin drops it.  Agents believe both only because they read them
over the connection whose certificate they pin (agent/tls.py PinSet); an older agent ignores
headers it does not know.

The files are looked at (a `stat` each) per answer and read again only when they changed, so a
running server announces `tls rotate` and `tls cancel` without a restart.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from policy_server.certs.rotation import CertFiles, fingerprint_or_none
from policy_server.certs.served import remembered_fingerprint

HEADER = b"kalkan-next-pin"
WITHDRAWN_HEADER = b"kalkan-withdrawn-pin"


class FilePin:
    """A certificate file's fingerprint as a header value, re-read when the file changes."""

    def __init__(self, cert: Path, key: Path | None = None) -> None:
        self.cert, self.key = Path(cert), key
        self._seen: tuple[int, int, bool] | None = None
        self._value: str | None = None
        self._lock = threading.Lock()

    def fingerprint(self) -> str | None:
        try:
            st = os.stat(self.cert)
        except OSError:
            self._seen, self._value = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size, self.key is None or self.key.exists())
        if stamp != self._seen:
            with self._lock:
                self._value = fingerprint_or_none(self.cert) if stamp[2] else None
                self._seen = stamp
        return self._value


class NextPin:
    """What the answers announce: (next pin, withdrawn pin) header values, or None."""

    def __init__(self, files: CertFiles) -> None:
        self.next = FilePin(*files.next)
        self.withdrawn = FilePin(files.withdrawn)
        self.current = FilePin(files.cert, files.key)
        # the certificate this process serves: known when `kalkan-server run` started it
        self.served = remembered_fingerprint()

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = []
        upcoming = self.next.fingerprint()
        if upcoming is None and self.served is not None:
            on_disk = self.current.fingerprint()
            if on_disk is not None and on_disk != self.served:  # activated, not restarted yet
                upcoming = on_disk
        if upcoming:
            out.append((HEADER, f"sha256:{upcoming}".encode()))
        withdrawn = self.withdrawn.fingerprint()
        if withdrawn and withdrawn != upcoming:
            out.append((WITHDRAWN_HEADER, f"sha256:{withdrawn}".encode()))
        return out


class AnnounceNextPin:
    def __init__(self, app, *, files: CertFiles) -> None:
        self.app = app
        self.next_pin = NextPin(files)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith("/api/"):
            return await self.app(scope, receive, send)

        async def send_with_pin(message):
            if message["type"] == "http.response.start":
                extra = self.next_pin.headers()
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return await self.app(scope, receive, send_with_pin)
