"""The per-session helper: reads the session's idle time, locks it when due, and
reports to the root agent.

It runs as the logged-in user (XDG autostart: install/xdg/kalkan-session-helper.desktop,
or the systemd user unit), so it can reach the user's X display or session bus.  It
decides nothing about policy: the root agent hands it a `SessionPolicy` on every poll;
if the agent cannot be reached it keeps the last one (or `OFFLINE_POLICY`), so a
workstation still locks when the agent is down.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.idle.core import IdleTracker, SessionPolicy
from agent.idle.wire import DEFAULT_SOCKET, WireError, request
from agent.platform.idle import (
    CommandLocker,
    IdleSource,
    IdleSourceError,
    LockResult,
    LogindIdleSource,
    MutterIdleSource,
    SessionLocker,
    XScreenSaverIdleSource,
    detect_idle_source,
    detect_locker,
)

log = logging.getLogger("kalkan.idle.helper")

OFFLINE_POLICY = SessionPolicy(timeout_s=900.0)  # the IdleSection default, used before the first poll
REPO_ROOT = Path(__file__).resolve().parents[2]


def _until(spec: dict) -> datetime:
    try:
        until = datetime.fromisoformat(str(spec["until"]))
        return until if until.tzinfo else until.replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return datetime.now(UTC) + timedelta(minutes=45)  # an older agent: at most a lesson's length


class LockScreen:
    """The lesson's own lock window (`agent.idle.lockscreen`, Tk) on the session's X display.

    `follow(lock, warning)` keeps the right window up: the full-screen grabbing one while the
    teacher's lock holds, the countdown banner before it, none otherwise.  A window that died
    before its time (killed from another terminal) is started again; one that closed at its
    `until` (the lesson or "eyes on me" ended) is not.
    """

    name = "window"

    def __init__(self, display: str, *, lang: str | None = None, start_timeout_s: float = 5.0) -> None:
        self.display = display
        self.lang = lang
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.key: tuple[str, str] | None = None
        self.until: datetime | None = None

    @staticmethod
    def usable(display: str | None) -> bool:
        return bool(display) and importlib.util.find_spec("tkinter") is not None

    def follow(self, lock: dict | None, warning: dict | None) -> LockResult:
        mode, spec = ("lock", lock) if lock else ("warn", warning) if warning else ("", None)
        if spec is None:
            self.close()
            return LockResult(True)
        key = (mode, str(spec["id"]))
        if self.proc is not None and self.key == key:
            if self.proc.poll() is None or (self.until and datetime.now(UTC) >= self.until):
                return LockResult(True)
            log.warning("the lock window ended before its time (exit %s): showing it again",
                        self.proc.returncode)
        self.close()
        return self._start(mode, spec, key)

    def _start(self, mode: str, spec: dict, key: tuple[str, str]) -> LockResult:
        until = _until(spec)
        if until <= datetime.now(UTC):
            return LockResult(True)
        argv = [sys.executable, "-m", "agent.idle.lockscreen", "--mode", mode,
                "--kind", str(spec.get("kind") or "lock"), "--message", str(spec.get("message") or "")[:200],
                "--until", until.isoformat()]
        if self.lang:
            argv += ["--lang", self.lang]
        env = {**os.environ, "DISPLAY": self.display}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True)
        except OSError as exc:
            return LockResult(False, f"could not start the lock window: {exc}")
        wanted = "kalkan-lock: grabbed" if mode == "lock" else "kalkan-lock: shown"
        deadline = time.monotonic() + self.start_timeout_s
        seen: list[str] = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break  # the window ended
            seen.append(line.strip())
            if line.startswith(wanted):
                self.proc, self.key, self.until = proc, key, until
                log.info("lesson %s window up until %s", mode, until.isoformat())
                return LockResult(True)
        proc.kill()
        proc.wait(timeout=5)
        tail = " / ".join(seen)[-300:] or "no output"
        return LockResult(False, f"the lock window did not come up on {self.display}: {tail}")

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            log.info("lesson window closed")
        self.proc, self.key, self.until = None, None, None


class SessionHelper:
    def __init__(
        self,
        source: IdleSource,
        locker: SessionLocker,
        *,
        socket_path: Path = DEFAULT_SOCKET,
        session: str = "",
        read_interval_s: float = 1.0,
        poll_interval_s: float = 1.0,  # a teacher's lock reaches the screen within 2 s
        screen: LockScreen | None = None,
    ) -> None:
        self.screen = screen  # the lesson's lock window; None: the locker (loginctl) locks for lessons
        self.source = source
        self.locker = locker
        self.socket_path = socket_path
        self.session = session
        self.read_interval_s = read_interval_s
        self.poll_interval_s = poll_interval_s
        self.policy = OFFLINE_POLICY
        self.tracker = IdleTracker()
        self._unsent: deque[dict] = deque(maxlen=20)  # reports kept while the agent is unreachable
        self._next_poll = 0.0
        self._lesson_lock: str | None = None  # the id of the teacher's lock this helper holds

    def poll(self) -> None:
        try:
            reply = request({"op": "poll", "session": self.session}, socket_path=self.socket_path)
            self.policy = SessionPolicy.from_wire(reply["policy"])
        except (WireError, KeyError, ValueError, TypeError) as exc:
            log.warning("keeping the last idle policy (%s s): %s", self.policy.timeout_s, exc)
            return
        while self._unsent:
            try:
                request(self._unsent[0], socket_path=self.socket_path)
            except WireError:
                return
            self._unsent.popleft()

    def report(self, message: dict) -> None:
        try:
            request(message, socket_path=self.socket_path)
        except WireError as exc:
            log.warning("could not report %s now, will retry: %s", message["op"], exc)
            self._unsent.append(message)

    def tick(self, now: float) -> None:
        """One step: poll the agent when due, read the idle time, lock if the core says so."""
        if now >= self._next_poll:
            self.poll()
            self._next_poll = now + self.poll_interval_s
            self.follow_lesson_lock()
        try:
            idle_s = self.source.idle_seconds()
        except IdleSourceError as exc:
            log.error("cannot read the idle time: %s", exc)
            return
        decision = self.tracker.step(idle_s, self.policy)
        if not decision.lock:
            return
        result = self.locker.lock()
        common = {"session": self.session, "idle_s": round(idle_s, 1), "reason": decision.reason,
                  "request_id": decision.request_id}
        if result.ok:
            log.info("locked the session after %.0f s idle (%s)", idle_s, decision.reason)
            self.report({"op": "locked", "timeout_s": self.policy.timeout_s, **common})
        else:
            log.error("could not lock the session: %s", result.error)
            self.report({"op": "lock_failed", "error": result.error, **common})

    def follow_lesson_lock(self) -> None:
        """Lock when the lesson's teacher locks this screen; unlock when the lock goes away (the
        teacher unlocked, or the lesson ended: nothing carries over)."""
        wanted = self.policy.lesson_lock
        if self.screen is not None and (wanted is None or wanted["id"] != self._lesson_lock):
            result = self.screen.follow(wanted, self.policy.lesson_warning)
            if wanted is not None and result.ok:
                return
            if wanted is not None:  # no window (no Tk, display gone): the desktop's locker instead
                log.error("lock window failed, locking with %s: %s", self.locker.name, result.error)
        if wanted is not None and wanted["id"] != self._lesson_lock:
            show_message(str(wanted.get("message") or ""))
            result = self.locker.lock()
            if result.ok:
                self._lesson_lock = wanted["id"]
                log.info("locked by the lesson's teacher (%s)", wanted["id"])
            else:
                log.error("could not lock for the lesson: %s", result.error)
        elif wanted is None and self._lesson_lock is not None:
            unlock = getattr(self.locker, "unlock", None)
            result = unlock() if unlock is not None else None
            if result is not None and not result.ok:
                log.error("could not unlock after the lesson's lock: %s", result.error)
            self._lesson_lock = None

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                self.tick(time.monotonic())
                stop.wait(self.read_interval_s)
        finally:
            if self.screen is not None:
                self.screen.close()


def show_message(message: str) -> None:
    """The teacher's message on the screen (best effort: a desktop notification)."""
    if not message or shutil.which("notify-send") is None:
        return
    try:
        subprocess.run(["notify-send", "--urgency=critical", "Kalkan", message[:200]], timeout=5,
                       capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not show the teacher's message: %s", exc)


def _source(kind: str, display: str | None) -> IdleSource:
    if kind == "x11":
        return XScreenSaverIdleSource(display)
    if kind == "mutter":
        return MutterIdleSource()
    if kind == "logind":
        return LogindIdleSource(os.environ.get("XDG_SESSION_ID", ""))
    env = dict(os.environ)
    if display:
        env["DISPLAY"] = display
    return detect_idle_source(env)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="kalkan-agent session-helper")
    parser.description = ("Per-session helper: locks this desktop session when it is idle "
                          "(timeouts come from the Kalkan agent).")
    parser.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="the agent's local socket")
    parser.add_argument("--source", choices=["auto", "x11", "mutter", "logind"], default="auto",
                        help="where to read the idle time (default: detect)")
    parser.add_argument("--display", help="X display (default: $DISPLAY)")
    parser.add_argument("--lock-command", help="lock with this command instead of loginctl, e.g. "
                                               "'xdg-screensaver lock'")
    parser.add_argument("--lock-window", choices=["auto", "off"], default="auto",
                        help="lesson locks: our full-screen window on the X display (auto, the default, "
                             "when there is a display and Tk) or the locker above (off)")
    parser.add_argument("--lang", help="the lock window's language (default: the session's locale, else ky)")
    parser.add_argument("--read-interval", type=float, default=1.0, help="seconds between idle readings")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between policy polls")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s kalkan-session-helper %(levelname)s %(message)s")
    try:
        source = _source(args.source, args.display)
        locker = CommandLocker(shlex.split(args.lock_command)) if args.lock_command else detect_locker()
    except (IdleSourceError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    session = os.environ.get("XDG_SESSION_ID") or args.display or os.environ.get("DISPLAY", "")
    display = args.display or os.environ.get("DISPLAY", "")
    screen = None
    if args.lock_window == "auto" and LockScreen.usable(display):
        screen = LockScreen(display, lang=args.lang)
    helper = SessionHelper(source, locker, socket_path=args.socket, session=session,
                           read_interval_s=args.read_interval, poll_interval_s=args.poll_interval,
                           screen=screen)
    log.info("watching session %r with %s, locking with %s, lesson locks with %s", session, source.name,
             locker.name, "the lock window" if screen else locker.name)
    def stop_on_term(_signum, _frame) -> None:
        raise KeyboardInterrupt  # the window is closed on the way out (SessionHelper.run)

    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        helper.run()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
