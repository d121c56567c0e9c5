"""`IdleCollector`: the root side of idle locking (000 §6.4, §6.7, §6.8).

It listens on a local Unix socket (`agent.idle.wire`) where

* each session helper polls for its timeout and reports locks and failures, which
  become `idle.locked` / `idle.lock_failed` events for the helper's OS user;
* the filtering proxy says "ISUO session started/ended for user X"
  (`agent.idle.wire.notify_isuo`), which shortens that user's timeout and, at the
  end of the session, asks the helper to lock at once (`lock_on_isuo_end`).

If an ISUO session ends for a user with no helper running, nobody can lock that
session: that is reported as `idle.lock_failed` with reason `no_helper`.
"""

from __future__ import annotations

import itertools
import os
import socket
import socketserver
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.idle.core import (
    IsuoState,
    isuo_ended,
    isuo_started,
    lesson_lock_for,
    lesson_warning_for,
    policy_for,
    session_locked,
)
from agent.idle.wire import DEFAULT_SOCKET, WireError, decode, encode, peer_uid, read_line
from agent.platform.accounts import user_and_groups
from policy_server.protocol import CollectorHealth, IdleLocked, IdleLockFailed, Subject


def user_of_uid(uid: int) -> tuple[str, list[str]]:
    """OS user name and the names of its groups (for `PolicyBundle.group_of`)."""
    name, groups = user_and_groups(uid)
    return name, list(groups)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    collector: IdleCollector


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(3.0)
        try:
            message = decode(read_line(sock))
            reply = self.server.collector.handle(message, uid=peer_uid(sock))  # type: ignore[attr-defined]
        except WireError as exc:
            reply = {"ok": False, "error": str(exc)}
        except OSError:
            return
        try:
            sock.sendall(encode(reply))
        except OSError:
            pass


class IdleCollector(Collector):
    name = "idle"

    def __init__(self, ctx: CollectorContext, *, socket_path: Path | None = None,
                 helper_stale_s: float = 30.0) -> None:
        super().__init__(ctx)
        self.socket_path = Path(socket_path or DEFAULT_SOCKET)
        self.helper_stale_s = helper_stale_s
        self._lock = threading.Lock()
        self._isuo: dict[str, IsuoState] = {}
        self._helper_seen: dict[str, float] = {}  # OS user → monotonic time of the last poll
        self._request_ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        try:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            if self.socket_path.exists() or self.socket_path.is_symlink():
                self.socket_path.unlink()
            server = _Server(str(self.socket_path), _Handler)
            # Anyone may connect: who is asking comes from SO_PEERCRED, not from the message.
            os.chmod(self.socket_path, 0o666)
        except OSError as exc:
            self._error = f"cannot listen on {self.socket_path}: {exc}"
            self.ctx.log.error("idle: %s", self._error)
            return
        server.collector = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="idle-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass

    def health(self) -> CollectorHealth:
        if self._error:
            return unhealthy(self._error, failed=True)
        if self._server is None:
            return unhealthy("not started")
        with self._lock:
            now = time.monotonic()
            helpers = sum(1 for t in self._helper_seen.values() if now - t < self.helper_stale_s)
            in_isuo = sum(1 for s in self._isuo.values() if s.active)
        return healthy(f"{helpers} session helper(s), {in_isuo} ISUO session(s)")

    # ------------------------------------------------------------------ requests

    def handle(self, message: dict, *, uid: int) -> dict:
        """Answer one request from the socket (also callable directly in-process)."""
        op = message.get("op")
        user, os_groups = user_of_uid(uid)
        try:
            if op == "poll":
                return {"ok": True, "policy": self._poll(user, os_groups).to_wire()}
            if op == "locked":
                self._locked(user, message)
                return {"ok": True}
            if op == "lock_failed":
                self._lock_failed(user, message)
                return {"ok": True}
            if op == "isuo":
                if uid not in (0, os.getuid()):
                    return {"ok": False,
                            "error": "only the agent or the proxy (root) may report ISUO sessions"}
                self.isuo_event(str(message.get("user", "")), str(message.get("state", "")))
                return {"ok": True}
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            return {"ok": False, "error": f"bad {op!r} message: {exc}"}
        return {"ok": False, "error": f"unknown op {op!r}; known: poll, locked, lock_failed, isuo"}

    def _poll(self, user: str, os_groups: list[str]):
        section = self.ctx.policy.idle
        group = self.ctx.policy.group_of(user, os_groups)
        with self._lock:
            self._helper_seen[user] = time.monotonic()
            isuo = self._isuo.get(user, IsuoState())
        policy = policy_for(group_timeout_s=section.timeouts_s.get(group, section.default_timeout_s),
                            isuo_timeout_s=section.isuo_timeout_s, isuo=isuo)
        kind = next((g.kind for g in self.ctx.policy.groups if g.name == group), "student")
        if kind == "student":  # the teacher's own screen is never locked by their lesson
            now = datetime.now(UTC)
            lock = lesson_lock_for(self.ctx.policy.lessons, room=self.ctx.room, seat=self.ctx.seat, now=now)
            if lock is not None:
                policy = replace(policy, lesson_lock=lock)
            else:
                warning = lesson_warning_for(self.ctx.policy.lessons, room=self.ctx.room, seat=self.ctx.seat,
                                             now=now)
                if warning is not None:
                    policy = replace(policy, lesson_warning=warning)
        return policy

    def _subject(self, user: str) -> Subject:
        return Subject(os_user=user[:64], seat=self.ctx.seat)

    def _locked(self, user: str, message: dict) -> None:
        data = IdleLocked(session=str(message.get("session", ""))[:64], idle_s=message["idle_s"],
                          timeout_s=message["timeout_s"], reason=message.get("reason", "idle"))
        with self._lock:
            state = self._isuo.get(user)
            if state is not None:
                self._isuo[user] = session_locked(state, request_id=message.get("request_id"))
        self.ctx.emit("idle.locked", data, subject=self._subject(user))

    def _lock_failed(self, user: str, message: dict) -> None:
        data = IdleLockFailed(session=str(message.get("session", ""))[:64],
                              error=str(message.get("error", "unknown error"))[:500],
                              reason=message.get("reason", "idle"), idle_s=message.get("idle_s"))
        self.ctx.emit("idle.lock_failed", data, subject=self._subject(user))

    def isuo_event(self, user: str, state: str) -> None:
        """An ISUO session started or ended for `user` (from the proxy)."""
        if not user or len(user) > 64:
            raise ValueError("an ISUO message needs the OS user name ('user', at most 64 characters)")
        if state not in ("start", "end"):
            raise ValueError(f"ISUO state must be 'start' or 'end', not {state!r}")
        section = self.ctx.policy.idle
        with self._lock:
            current = self._isuo.get(user, IsuoState())
            if state == "start":
                self._isuo[user] = isuo_started(current)
                return
            request_id = f"isuo-end-{next(self._request_ids)}"
            self._isuo[user] = isuo_ended(current, request_id=request_id,
                                          lock_on_end=section.lock_on_isuo_end)
            seen = self._helper_seen.get(user)
            no_helper = seen is None or time.monotonic() - seen > self.helper_stale_s
        if section.lock_on_isuo_end and no_helper:
            self.ctx.emit("idle.lock_failed", IdleLockFailed(
                error="no Kalkan session helper is running for this user, so the session could not be "
                      "locked after ISUO", reason="no_helper"), subject=self._subject(user))
