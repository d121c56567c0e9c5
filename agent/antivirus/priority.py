"""Run the calling thread at low CPU and I/O priority (like `nice -n 10 ionice -c 3`).

Per thread, so the agent's other collectors keep their normal priority.  clamd
does the reading through the passed descriptors, so Kalkan's clamd unit also
runs niced (install/clamav/kalkan-clamd.conf); both together keep a scan out
of the way of a person at the keyboard.
"""

from __future__ import annotations

import ctypes
import os
import threading

_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13


def lower_thread_priority(nice: int = 10, io_idle: bool = True) -> list[str]:
    """Lower this thread's priority; return what could not be done (never raises)."""
    problems = []
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(current, nice))
    except OSError as exc:
        problems.append(f"nice: {exc}")
    if io_idle:
        number = _SYS_IOPRIO_SET.get(os.uname().machine)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if number is None or libc.syscall(number, _IOPRIO_WHO_PROCESS, tid,
                                              _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT) != 0:
                problems.append(f"ionice: errno {ctypes.get_errno()}")
        except OSError as exc:
            problems.append(f"ionice: {exc}")
    return problems
