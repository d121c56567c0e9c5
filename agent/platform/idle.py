"""Platform adapters for idle locking: read a session's idle time, lock the session.

Linux sources, in the order `detect_idle_source` tries them:

* X11: the XScreenSaver extension (libXss through ctypes, the same call as
  `xprintidle`); the X server's own input-idle counter.
* Wayland under GNOME: Mutter's `org.gnome.Mutter.IdleMonitor` on the session bus
  (through `gdbus`, so no D-Bus library is needed).
* Anything else: logind's IdleHint for the session (coarse: desktops that do not
  set it report 0).

Lockers: `loginctl lock-session` (asks the desktop's locker through logind), or a
command such as `xdg-screensaver lock`.  `fake` adapters serve the unit tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class IdleSourceError(RuntimeError):
    pass


class IdleSource(Protocol):
    name: str

    def idle_seconds(self) -> float:
        """Seconds since the last keyboard or mouse input in this session."""
        ...


@dataclass(frozen=True)
class LockResult:
    ok: bool
    error: str = ""


class SessionLocker(Protocol):
    name: str

    def lock(self) -> LockResult: ...


# --------------------------------------------------------------------------- X11


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),  # milliseconds since the last input
        ("event_mask", ctypes.c_ulong),
    ]


def _load(name: str) -> ctypes.CDLL:
    path = ctypes.util.find_library(name)
    if not path:
        raise IdleSourceError(f"lib{name} not found; install the Debian package lib{name.lower()}1")
    return ctypes.CDLL(path)


class XScreenSaverIdleSource:
    """Idle time from the X server's XScreenSaver extension (like `xprintidle`)."""

    name = "x11-xscreensaver"

    def __init__(self, display: str | None = None) -> None:
        self._x11 = _load("X11")
        self._xss = _load("Xss")
        self._x11.XOpenDisplay.restype = ctypes.c_void_p
        self._x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self._x11.XDefaultRootWindow.restype = ctypes.c_ulong
        self._x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        self._x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self._x11.XFree.argtypes = [ctypes.c_void_p]
        self._xss.XScreenSaverQueryExtension.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        self._xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
        self._xss.XScreenSaverQueryInfo.argtypes = [
            ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XScreenSaverInfo)]
        display = display or os.environ.get("DISPLAY")
        if not display:
            raise IdleSourceError("no X display: DISPLAY is not set")
        self.display = display
        self._dpy = self._x11.XOpenDisplay(display.encode())
        if not self._dpy:
            raise IdleSourceError(
                f"cannot open X display {display!r} (is the session running, XAUTHORITY set?)")
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        found = self._xss.XScreenSaverQueryExtension(
            self._dpy, ctypes.byref(event_base), ctypes.byref(error_base))
        if not found:
            self.close()
            raise IdleSourceError(f"X display {display!r} has no MIT-SCREEN-SAVER extension")
        self._info = self._xss.XScreenSaverAllocInfo()
        self._root = self._x11.XDefaultRootWindow(self._dpy)

    def idle_seconds(self) -> float:
        if not self._dpy:
            raise IdleSourceError("X display already closed")
        if not self._xss.XScreenSaverQueryInfo(self._dpy, self._root, self._info):
            raise IdleSourceError(f"XScreenSaverQueryInfo failed on {self.display!r}")
        return self._info.contents.idle / 1000.0

    def close(self) -> None:
        if getattr(self, "_info", None):
            self._x11.XFree(ctypes.cast(self._info, ctypes.c_void_p))
            self._info = None
        if self._dpy:
            self._x11.XCloseDisplay(self._dpy)
            self._dpy = None


# --------------------------------------------------------------------------- Wayland (GNOME)

_GDBUS_UINT64 = re.compile(r"\(uint64 (\d+),\)")


def parse_mutter_idletime(output: str) -> float:
    """`gdbus call … GetIdletime` prints `(uint64 12345,)`: milliseconds."""
    match = _GDBUS_UINT64.search(output)
    if not match:
        raise IdleSourceError(f"unexpected answer from Mutter's IdleMonitor: {output.strip()!r}")
    return int(match.group(1)) / 1000.0


class MutterIdleSource:
    """Idle time from GNOME Mutter's IdleMonitor on the session bus (Wayland)."""

    name = "gnome-mutter"
    COMMAND = ["gdbus", "call", "--session", "--dest", "org.gnome.Mutter.IdleMonitor",
               "--object-path", "/org/gnome/Mutter/IdleMonitor/Core",
               "--method", "org.gnome.Mutter.IdleMonitor.GetIdletime"]

    def idle_seconds(self) -> float:
        try:
            out = subprocess.run(self.COMMAND, capture_output=True, text=True, timeout=5, check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise IdleSourceError(f"asking Mutter's IdleMonitor failed: {exc}") from None
        return parse_mutter_idletime(out)


# --------------------------------------------------------------------------- logind


def parse_logind_idle(output: str, *, now_monotonic_us: int) -> float:
    """`loginctl show-session ID -p IdleHint -p IdleSinceHintMonotonic` → idle seconds."""
    props = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    if props.get("IdleHint") != "yes":
        return 0.0
    since = int(props.get("IdleSinceHintMonotonic", "0") or 0)
    return max(0.0, (now_monotonic_us - since) / 1_000_000) if since else 0.0


class LogindIdleSource:
    """Coarse fallback: logind's IdleHint, set by desktops that report idleness."""

    name = "logind-idlehint"

    def __init__(self, session_id: str) -> None:
        if not session_id:
            raise IdleSourceError("no logind session id (XDG_SESSION_ID is not set)")
        self.session_id = session_id

    def idle_seconds(self) -> float:
        try:
            out = subprocess.run(
                ["loginctl", "show-session", self.session_id,
                 "-p", "IdleHint", "-p", "IdleSinceHintMonotonic"],
                capture_output=True, text=True, timeout=5, check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise IdleSourceError(f"asking logind about session {self.session_id} failed: {exc}") from None
        return parse_logind_idle(out, now_monotonic_us=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)


def detect_idle_source(env: Mapping[str, str] | None = None) -> IdleSource:
    """The best idle source for the session described by `env` (os.environ by default)."""
    env = os.environ if env is None else env
    problems = []
    if env.get("WAYLAND_DISPLAY") and "GNOME" in env.get("XDG_CURRENT_DESKTOP", "").upper():
        return MutterIdleSource()
    if env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        try:
            return XScreenSaverIdleSource(env["DISPLAY"])
        except IdleSourceError as exc:
            problems.append(str(exc))
    if env.get("XDG_SESSION_ID"):
        return LogindIdleSource(env["XDG_SESSION_ID"])
    raise IdleSourceError("no idle source for this session: " + ("; ".join(problems) or
                          "neither DISPLAY, a GNOME Wayland session nor XDG_SESSION_ID is set"))


# --------------------------------------------------------------------------- lockers


class CommandLocker:
    """Lock by running a command (e.g. `xdg-screensaver lock`); exit status 0 = locked."""

    def __init__(self, argv: Sequence[str], *, timeout_s: float = 15.0) -> None:
        if not argv:
            raise ValueError("the lock command is empty")
        self.argv = list(argv)
        self.timeout_s = timeout_s
        self.name = f"command:{os.path.basename(self.argv[0])}"

    def lock(self) -> LockResult:
        try:
            proc = subprocess.run(self.argv, capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError:
            return LockResult(False, f"lock command not found: {self.argv[0]}")
        except subprocess.TimeoutExpired:
            return LockResult(False, f"lock command {self.argv[0]} did not finish in {self.timeout_s:g} s")
        except OSError as exc:
            return LockResult(False, f"lock command {self.argv[0]} failed to start: {exc}")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-200:]
            return LockResult(False, f"lock command {self.argv[0]} exited with {proc.returncode}: {tail}")
        return LockResult(True)


class LoginctlLocker:
    """`loginctl lock-session ID`, then wait for logind's LockedHint to confirm it.

    logind only *asks* the desktop's locker; with no locker listening the call still
    succeeds, so the LockedHint check is what tells a real lock from a silent failure.
    """

    name = "loginctl"

    def __init__(self, session_id: str, *, confirm_s: float = 5.0) -> None:
        self.session_id = session_id
        self.confirm_s = confirm_s

    def _locked_hint(self) -> str:
        out = subprocess.run(["loginctl", "show-session", self.session_id, "-p", "LockedHint", "--value"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip()

    def lock(self) -> LockResult:
        result = CommandLocker(["loginctl", "lock-session", self.session_id]).lock()
        if not result.ok or self.confirm_s <= 0:
            return result
        deadline = time.monotonic() + self.confirm_s
        while time.monotonic() < deadline:
            try:
                hint = self._locked_hint()
            except (OSError, subprocess.SubprocessError) as exc:
                return LockResult(False, f"could not confirm the lock with logind: {exc}")
            if hint == "yes":
                return LockResult(True)
            if hint not in ("no", ""):
                break  # an old logind without LockedHint: trust the exit status
            time.sleep(0.5)
        else:
            return LockResult(False, f"session {self.session_id} did not lock within {self.confirm_s:g} s "
                                     "(no screen locker answered logind)")
        return LockResult(True)


    def unlock(self) -> LockResult:
        """End a lesson's lock (`loginctl unlock-session`)."""
        return CommandLocker(["loginctl", "unlock-session", self.session_id]).lock()


def detect_locker(env: Mapping[str, str] | None = None) -> SessionLocker:
    env = os.environ if env is None else env
    if env.get("XDG_SESSION_ID") and shutil.which("loginctl"):
        return LoginctlLocker(env["XDG_SESSION_ID"])
    candidates = (["xdg-screensaver", "lock"], ["gnome-screensaver-command", "-l"],
                  ["xflock4"], ["dm-tool", "lock"])
    for argv in candidates:
        if shutil.which(argv[0]):
            return CommandLocker(argv)
    raise IdleSourceError("no way to lock this session: no XDG_SESSION_ID for loginctl and no "
                          "xdg-screensaver / gnome-screensaver-command / xflock4 / dm-tool installed")


# --------------------------------------------------------------------------- fakes (tests)


class FakeIdleSource:
    name = "fake"

    def __init__(self, idle_s: float = 0.0) -> None:
        self.idle_s = idle_s

    def idle_seconds(self) -> float:
        return self.idle_s


class FakeLocker:
    name = "fake"

    def __init__(self, *, fail_with: str = "") -> None:
        self.fail_with = fail_with
        self.calls = 0
        self.unlocks = 0
        self.locked = False

    def lock(self) -> LockResult:
        self.calls += 1
        if self.fail_with:
            return LockResult(False, self.fail_with)
        self.locked = True
        return LockResult(True)

    def unlock(self) -> LockResult:
        self.unlocks += 1
        self.locked = False
        return LockResult(True)
