"""The lesson's lock window: full screen, always on top, keyboard and pointer grabbed.

When the lesson's teacher locks a screen ("Lock", "Lock all screens", "Eyes on me"), the
session helper (`agent.idle.helper`) starts this program as the logged-in student, on the
student's own X display:

    python -m agent.idle.lockscreen --mode lock --message "Look at the board" \
        --until 2026-12-05T08:45:00+00:00 --kind lock --lang ky

* `--mode lock`: a borderless window the size of the screen, above every other window,
  holding a global keyboard and pointer grab (X11 `XGrabKeyboard`/`XGrabPointer` through
  Tk's `grab -global`), so typing and clicks reach no other program. It shows the teacher's
  message and a countdown to the moment the lock lifts by itself (the end of "eyes on me",
  or the end of the lesson for a plain lock).
* `--mode warn`: the countdown *before* a lock (the teacher chose "lock in 30 s"): a banner
  across the top of the screen, on top, no grab; it closes when the countdown ends (the
  helper then starts the lock itself).

The window closes itself when `--until` comes, even if the helper or the agent is gone
(nothing carries over past the lesson); the helper ends it earlier (SIGTERM) when the
teacher unlocks.  It reads nothing and sends nothing: no screen image ever leaves the seat.

Tk is Python's own toolkit (Debian `python3-tk`), present on a 2012 school PC; where there
is no display or no Tk, the helper falls back to `loginctl lock-session`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from agent.i18n import choose_language, message

CATALOGUE = {
    "lock_title": {
        "ky": "Мугалим бул экранды кулпулады",
        "ru": "Учитель заблокировал этот экран",
        "en": "Your teacher has locked this screen",
    },
    "eyes_title": {
        "ky": "Мугалимди карагыла",
        "ru": "Смотрите на учителя",
        "en": "Eyes on your teacher",
    },
    "warn_title": {
        "ky": "Мугалим экранды кулпулайт",
        "ru": "Учитель блокирует экран",
        "en": "Your teacher is locking the screens",
    },
    "eyes_left": {
        "ky": "Экран ачылганга чейин: {time}",
        "ru": "До разблокировки: {time}",
        "en": "Unlocks in {time}",
    },
    "lock_left": {
        "ky": "Экранды мугалим ачат, эң кечи сабак бүткөндө (калды: {time})",
        "ru": "Экран разблокирует учитель, не позже конца урока (осталось {time})",
        "en": "Your teacher will unlock it, at the latest when the lesson ends (in {time})",
    },
    "warn_left": {
        "ky": "Экран кулпуланганга чейин: {time}. Ишиңизди сактаңыз.",
        "ru": "До блокировки экрана: {time}. Сохраните свою работу.",
        "en": "This screen locks in {time}. Save your work.",
    },
}

BACKGROUND = "#1d3557"
FOREGROUND = "#ffffff"
WARN_BACKGROUND = "#ffdd00"
WARN_FOREGROUND = "#0b0c0c"
TICK_MS = 250
GRAB_RETRY_MS = 100


def clock(seconds: float) -> str:
    """1:05 / 1:02:05 — the countdown as the screen shows it."""
    seconds = max(0, int(seconds + 0.999))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def texts(*, mode: str, kind: str, lang: str, left_s: float) -> tuple[str, str]:
    """(title, countdown line) in the student's language (pure, for the tests)."""
    name = "warn" if mode == "warn" else "eyes" if kind == "eyes" else "lock"
    return (message(CATALOGUE, f"{name}_title", lang),
            message(CATALOGUE, f"{name}_left", lang, time=clock(left_s)))


class LockWindow:
    def __init__(self, *, mode: str, kind: str, text: str, until: datetime, lang: str) -> None:
        import tkinter as tk

        self.tk = tk
        self.mode, self.kind, self.lang, self.until = mode, kind, lang, until
        self.root = root = tk.Tk(className="kalkan-lock")
        root.title("Kalkan")
        width, height = root.winfo_screenwidth(), root.winfo_screenheight()
        warn = mode == "warn"
        bg, fg = (WARN_BACKGROUND, WARN_FOREGROUND) if warn else (BACKGROUND, FOREGROUND)
        root.overrideredirect(True)  # no title bar, no close button, not managed by the desktop
        root.geometry(f"{width}x{max(120, height // 5) if warn else height}+0+0")
        root.configure(background=bg, cursor="" if warn else "none")
        root.attributes("-topmost", True)
        root.protocol("WM_DELETE_WINDOW", lambda: None)
        scale = max(0.6, min(2.0, height / 768))
        frame = tk.Frame(root, background=bg)
        frame.place(relx=0.5, rely=0.5, anchor="center")
        self.title = tk.Label(frame, font=("DejaVu Sans", int((22 if warn else 30) * scale), "bold"),
                              background=bg, foreground=fg, wraplength=int(width * 0.85), justify="center")
        self.title.pack(pady=(0, int(8 * scale)))
        self.message = tk.Label(frame, text=text, font=("DejaVu Sans", int((16 if warn else 24) * scale)),
                                background=bg, foreground=fg, wraplength=int(width * 0.85), justify="center")
        if text:
            self.message.pack(pady=(0, int(8 * scale)))
        self.left = tk.Label(frame, font=("DejaVu Sans", int((14 if warn else 18) * scale)),
                             background=bg, foreground=fg, wraplength=int(width * 0.85), justify="center")
        self.left.pack()
        if not warn:
            for sequence in ("<Key>", "<Button>", "<MouseWheel>"):
                root.bind_all(sequence, lambda _event: "break")
        self.grabbed = False
        self.refresh()
        root.after(0, self.hold)

    def seconds_left(self) -> float:
        return (self.until - datetime.now(UTC)).total_seconds()

    def refresh(self) -> None:
        left = self.seconds_left()
        if left <= 0:  # the countdown, "eyes on me" or the lesson is over: lift by itself
            self.root.destroy()
            return
        title, line = texts(mode=self.mode, kind=self.kind, lang=self.lang, left_s=left)
        self.title.configure(text=title)
        self.left.configure(text=line)
        self.root.after(TICK_MS, self.refresh)

    def hold(self) -> None:
        """Stay on top and (lock mode) keep the keyboard and pointer grabbed: a grab fails while
        another client holds one or before the window is mapped, so it is retried."""
        try:
            self.root.lift()
            self.root.attributes("-topmost", True)
            if self.mode == "lock":
                if self.root.grab_status() != "global":
                    self.root.grab_set_global()
                self.root.focus_force()
                if not self.grabbed:
                    self.grabbed = True
                    print("kalkan-lock: grabbed", flush=True)
        except self.tk.TclError:
            self.root.after(GRAB_RETRY_MS, self.hold)
            return
        self.root.after(1000, self.hold)

    def run(self) -> None:
        size = f"{self.root.winfo_screenwidth()}x{self.root.winfo_screenheight()}"
        print(f"kalkan-lock: shown {self.mode} {size}", flush=True)
        self.root.mainloop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent.idle.lockscreen",
                                     description="The lesson's full-screen lock window (started by the "
                                                 "session helper).")
    parser.add_argument("--mode", choices=["lock", "warn"], default="lock")
    parser.add_argument("--kind", choices=["lock", "eyes"], default="lock")
    parser.add_argument("--message", default="", help="the teacher's message (shown as written)")
    parser.add_argument("--until", required=True, help="ISO time when the window closes by itself")
    parser.add_argument("--lang", help="ky, ru or en (default: the session's locale, else ky)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        until = datetime.fromisoformat(args.until)
    except ValueError:
        print(f"kalkan-lock: --until {args.until!r} is not an ISO time", file=sys.stderr)
        return 2
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    if until <= datetime.now(UTC):
        return 0
    try:
        window = LockWindow(mode=args.mode, kind=args.kind, text=args.message[:200], until=until,
                            lang=choose_language(args.lang, default="ky"))
    except Exception as exc:  # noqa: BLE001 — no Tk or no display: the helper falls back to loginctl
        print(f"kalkan-lock: cannot open the lock window: {exc}", file=sys.stderr)
        return 3
    window.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
