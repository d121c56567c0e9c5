"""The lesson's own lock window under a real X server (Xvfb, 1366×768): the real session
helper, polling the real IdleCollector over its Unix socket, puts up the full-screen window
when the teacher's lock is in the bundle; it covers the screen, typing and clicks reach no
other window, and it goes away when the teacher unlocks, when "eyes on me" runs out and —
with the helper killed — by itself when the lesson ends.  Screenshots in ky/ru/en go to
test-artifacts/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import ImageGrab

from agent.idle.lockscreen import BACKGROUND, WARN_BACKGROUND, clock, texts
from policy_server.protocol import Lesson, PolicyBundle
from tests.idle.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
WIDTH, HEIGHT = 1366, 768


@pytest.fixture(scope="module")
def screen():
    """A 1366×768 Xvfb (the lab PCs' screen); yields its DISPLAY."""
    if not shutil.which("Xvfb"):
        pytest.fail("Xvfb is not installed: apt-get install xvfb (listed in install/apt-packages.txt)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0",
                             f"{WIDTH}x{HEIGHT}x24"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


def xdo(display: str, *args: str) -> str:
    out = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display},
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


VICTIM = textwrap.dedent("""
    import sys, tkinter as tk
    root = tk.Tk(className="victim")
    root.title("victim")
    root.geometry("400x120+40+40")
    entry = tk.Entry(root)
    entry.pack(fill="x")
    out = open(sys.argv[1], "a", buffering=1)
    root.bind_all("<Key>", lambda ev: out.write("key " + ev.keysym + "\\n"))
    root.bind_all("<Button>", lambda ev: out.write("click\\n"))
    root.after(200, lambda: print("ready", flush=True))
    root.mainloop()
""")


@pytest.fixture
def victim(screen, tmp_path):
    """Another program's window (a text box) that writes down every key and click it receives."""
    log = tmp_path / "victim.log"
    proc = subprocess.Popen([sys.executable, "-c", VICTIM, str(log)], env={**os.environ, "DISPLAY": screen},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert wait_until(lambda: bool(xdo(screen, "search", "--name", "^victim$")), timeout=5)
    window = xdo(screen, "search", "--name", "^victim$").split()[0]
    yield window, log
    proc.kill()
    proc.wait(timeout=5)


def keys(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def type_into(display: str, window: str, text: str) -> None:
    """Focus the window and type through XTEST, as a student at the keyboard would, then click it."""
    xdo(display, "windowfocus", window)
    xdo(display, "type", "--delay", "20", text)
    xdo(display, "mousemove", "100", "80", "click", "1")
    time.sleep(0.4)


def lock_windows(display: str) -> list[str]:
    return xdo(display, "search", "--classname", "kalkan-lock").split()


def bundle(*, lock: bool = True, ends_in_s: float = 600, eyes_s: float | None = None,
           lock_in_s: float = -1, message: str = "Доскага карагыла — Look at the board") -> PolicyBundle:
    now = datetime.now(UTC)
    lesson = Lesson(id="l1", room="lab-1", teacher="aigul", starts_at=now - timedelta(minutes=5),
                    ends_at=now + timedelta(seconds=ends_in_s), locked_seats=["*"] if lock else [],
                    lock_message=message, lock_at=now + timedelta(seconds=lock_in_s),
                    eyes_until=now + timedelta(seconds=eyes_s) if eyes_s else None)
    return PolicyBundle(lessons=[lesson])


def start_helper(display: str, socket_path: Path, lock_log: Path, *, lang: str) -> subprocess.Popen:
    """The real session helper, as XDG autostart starts it in a student's Kyrgyz/Russian/English
    session; its fallback locker is a script that records calls (it must not be used here)."""
    script = lock_log.with_suffix(".sh")
    script.write_text(f"#!/bin/sh\necho locked >> {lock_log}\n")
    script.chmod(0o755)
    env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(REPO), "LANG": f"{lang}_KG.UTF-8"}
    env.pop("LC_ALL", None)
    env.pop("LC_MESSAGES", None)
    return subprocess.Popen(
        [sys.executable, "-m", "agent.idle.helper", "--source", "x11", "--display", display,
         "--socket", str(socket_path), "--lock-command", str(script), "--read-interval", "0.2",
         "--poll-interval", "0.2", "-v"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def screenshot(display: str, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    image = ImageGrab.grab(xdisplay=display)
    image.save(ARTIFACTS / name)
    return image


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def test_texts_in_three_languages():
    assert clock(65) == "1:05" and clock(3725) == "1:02:05" and clock(0.2) == "0:01"
    for lang in ("ky", "ru", "en"):
        for mode, kind in (("lock", "lock"), ("lock", "eyes"), ("warn", "lock")):
            title, line = texts(mode=mode, kind=kind, lang=lang, left_s=90)
            assert title and "1:30" in line
    assert texts(mode="lock", kind="lock", lang="ky", left_s=5)[0] == "Мугалим бул экранды кулпулады"
    assert texts(mode="lock", kind="eyes", lang="ru", left_s=5)[1] == "До разблокировки: 0:05"


def test_teacher_lock_covers_the_screen_holds_input_and_lifts(screen, victim, idle_collector, tmp_path):
    window, log = victim
    idle_collector.ctx.room = "lab-1"
    type_into(screen, window, "abc")
    assert keys(log)[:3] == ["key a", "key b", "key c"] and "click" in keys(log), "the victim works unlocked"
    before = len(keys(log))

    lock_log = tmp_path / "fallback.log"
    helper = start_helper(screen, idle_collector.socket_path, lock_log, lang="ky")
    try:
        idle_collector.on_policy(bundle())
        started = time.monotonic()
        assert wait_until(lambda: lock_windows(screen), timeout=8), "no lock window"
        time.sleep(0.5)  # the grab follows the map
        [lock_id] = lock_windows(screen)
        geometry = xdo(screen, "getwindowgeometry", lock_id)
        assert "Position: 0,0" in geometry and f"Geometry: {WIDTH}x{HEIGHT}" in geometry, geometry
        assert time.monotonic() - started < 4

        # the student tries to type and click into the other program: nothing reaches it
        type_into(screen, window, "xyz")
        assert keys(log)[before:] == [], "input reached another window under the lock"

        image = screenshot(screen, "lesson-lock-ky-1366.png")
        for point in ((2, 2), (WIDTH - 3, 2), (2, HEIGHT - 3), (WIDTH - 3, HEIGHT - 3), (60, 60)):
            assert image.getpixel(point)[:3] == rgb(BACKGROUND), point  # covered, the victim too
        assert not lock_log.exists(), "the fallback locker must not run when the window works"

        # a window killed from elsewhere comes back while the lock holds
        def windows_process() -> list[str]:
            return subprocess.run(["pgrep", "-P", str(helper.pid), "-f", "agent.idle.lockscreen"],
                                  capture_output=True, text=True).stdout.split()

        [first] = windows_process()
        os.kill(int(first), signal.SIGKILL)
        assert wait_until(lambda: windows_process() not in ([], [first]) and lock_windows(screen), timeout=6)
        time.sleep(0.5)
        type_into(screen, window, "z")
        assert keys(log)[before:] == [], "input reached another window after the lock came back"

        # the teacher unlocks: the window goes within 2 s and typing works again
        idle_collector.on_policy(bundle(lock=False))
        assert wait_until(lambda: not lock_windows(screen), timeout=3)
        type_into(screen, window, "ok")
        assert keys(log)[before:before + 2] == ["key o", "key k"]

        # "eyes on me" for 3 s: the window lifts when its countdown ends, no unlock needed
        idle_collector.on_policy(bundle(lock=False, eyes_s=3))
        assert wait_until(lambda: lock_windows(screen), timeout=5)
        assert wait_until(lambda: not lock_windows(screen), timeout=6)
    finally:
        helper.terminate()
        output = helper.communicate(timeout=10)[0]
        print(output)
    assert not lock_windows(screen), output


def test_window_lifts_by_itself_at_the_lesson_end_without_the_helper(screen, victim, idle_collector,
                                                                     tmp_path):
    """The helper is killed (-9) while the screen is locked: the window still ends with the lesson."""
    window, log = victim
    idle_collector.ctx.room = "lab-1"
    helper = start_helper(screen, idle_collector.socket_path, tmp_path / "fallback.log", lang="ru")
    try:
        idle_collector.on_policy(bundle(ends_in_s=6))
        assert wait_until(lambda: lock_windows(screen), timeout=5)
        time.sleep(0.5)
        screenshot(screen, "lesson-lock-ru-1366.png")
    finally:
        helper.kill()
        helper.communicate(timeout=10)
    before = len(keys(log))
    type_into(screen, window, "q")
    assert keys(log)[before:] == [] and lock_windows(screen)
    assert wait_until(lambda: not lock_windows(screen), timeout=8), "the window outlived the lesson"
    type_into(screen, window, "w")
    assert keys(log)[before:before + 1] == ["key w"]


def test_countdown_banner_then_the_lock_in_english(screen, idle_collector, tmp_path):
    idle_collector.ctx.room = "lab-1"
    helper = start_helper(screen, idle_collector.socket_path, tmp_path / "fallback.log", lang="en")
    try:
        idle_collector.on_policy(bundle(lock_in_s=3))
        assert wait_until(lambda: lock_windows(screen), timeout=5)
        time.sleep(0.4)
        image = screenshot(screen, "lesson-lock-warning-en-1366.png")
        assert image.getpixel((5, 5))[:3] == rgb(WARN_BACKGROUND)
        assert image.getpixel((5, HEIGHT - 5))[:3] != rgb(WARN_BACKGROUND)  # a banner, the screen usable
        time.sleep(3.5)
        assert wait_until(lambda: screenshot(screen, "lesson-lock-en-1366.png").getpixel((5, HEIGHT - 5))[:3]
                          == rgb(BACKGROUND), timeout=5)
    finally:
        helper.terminate()
        helper.communicate(timeout=10)
    assert wait_until(lambda: not lock_windows(screen), timeout=3)
