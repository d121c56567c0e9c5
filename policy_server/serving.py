"""A quick, quiet stop under uvicorn: connections with nothing left to send are dropped.

On SIGTERM uvicorn asks every connection to close and waits (up to the graceful timeout)
until they are gone.  Over TLS a close is a handshake: the server sends close_notify and
waits for the client's, which an idle keep-alive client (every agent keeps one) never
sends while it is not using the connection.  So each stop waited out the whole graceful
timeout and logged "Cancel N running task(s), timeout graceful shutdown exceeded" as an
ERROR.  Here a connection that is idle, or whose last answer has been fully written, is
aborted instead; a connection still answering finishes first (push streams end at once:
`app._close_streams_on_signal`).  Nothing unanswered is lost: a client whose connection
dropped sends again, and ids are stored once.

`install()` patches uvicorn's two HTTP protocol classes (pinned in install/constraints.txt)
once per process; it is called by `create_app`, so spawned workers get it too.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("kalkan.server")

_PROTOCOLS = (("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
              ("uvicorn.protocols.http.h11_impl", "H11Protocol"))
_POLL_S = 0.05


def _abort_when_written(protocol) -> None:
    transport = protocol.transport
    cycle = protocol.cycle
    done = cycle is None or cycle.response_complete
    if done and (transport.get_write_buffer_size() == 0):
        transport.abort()
        return
    if cycle is not None:
        cycle.keep_alive = False
    protocol.loop.call_later(_POLL_S, _abort_when_written, protocol)


def _shutdown(self) -> None:
    """uvicorn's graceful-shutdown request to one connection."""
    if self.transport.is_closing() and self.cycle is None:
        self.transport.abort()
        return
    _abort_when_written(self)


def install() -> None:
    for module_name, class_name in _PROTOCOLS:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):  # that protocol is not installed
            continue
        if getattr(cls, "_kalkan_quick_close", False):
            continue
        cls.shutdown = _shutdown
        cls._kalkan_quick_close = True
