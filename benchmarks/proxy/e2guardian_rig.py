"""E2Guardian (Debian `e2guardian` 5.3) on loopback with the same UT1 domain lists, for the
side-by-side benchmark.  Everything goes into a temp copy of /etc/e2guardian; nothing of the
machine's own configuration is touched.

    proc, port = start_e2guardian(tmp_dir, ut1_dir)

Settings changed from Debian's defaults, and why:
* listens on 127.0.0.1 only (filterip), on a free port; the transparent-HTTPS listener
  (which would bind every address) is commented out;
* every UT1 category's `domains` list is `.Include`d in the banned-site list (what Kalkan's
  compiled index holds);
* per-request logging off (`loglevel = 0`): Kalkan does not log allowed requests either;
* pid file and logs in the temp dir; foreground (`-N`).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

E2G = shutil.which("e2guardian") or "/usr/sbin/e2guardian"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, ut1_dir: Path) -> tuple[Path, int]:
    conf_dir = tmp / "e2guardian"
    shutil.copytree("/etc/e2guardian", conf_dir, ignore=shutil.ignore_patterns("private"))
    for path in conf_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            if "/etc/e2guardian" in text:
                path.write_text(text.replace("/etc/e2guardian", str(conf_dir)))
    domain_lists = sorted(ut1_dir.glob("*/domains"))
    if not domain_lists:
        raise FileNotFoundError(f"no UT1 */domains lists under {ut1_dir}")
    with open(conf_dir / "lists" / "bannedsitelist", "a") as fh:
        fh.write("\n# UT1 (Kalkan benchmark)\n")
        for lst in domain_lists:
            fh.write(f".Include<{lst}>\n")
    port = _free_port()
    main = conf_dir / "e2guardian.conf"
    text = main.read_text()
    replacements = {
        r"^filterip =.*$": "filterip = 127.0.0.1",
        r"^filterports =.*$": f"filterports = {port}",
        # "if defined enables transparent https", and it would listen on every address: off
        r"^transparenthttpsport =.*$": "#transparenthttpsport = off (Kalkan benchmark)",
        r"^loglevel =.*$": "loglevel = 0",
        r"^nodaemon =.*$": "nodaemon = on",
        r"^#?pidfilename =.*$": f"pidfilename = '{tmp / 'e2guardian.pid'}'",
        r"^#?loglocation =.*$": f"loglocation = '{tmp / 'e2guardian-access.log'}'",
    }
    for pattern, value in replacements.items():
        text, count = re.subn(pattern, value, text, count=1, flags=re.M)
        if count != 1:
            raise RuntimeError(f"e2guardian.conf: no line matches {pattern!r}; the packaged config changed")
    main.write_text(text)
    # e2guardian drops to its own account before opening the log
    access_log = tmp / "e2guardian-access.log"
    access_log.touch()
    account = pwd.getpwnam("e2guardian")
    os.chown(access_log, account.pw_uid, account.pw_gid)
    return main, port


def start_e2guardian(tmp: Path, ut1_dir: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, int]:
    main, port = write_config(tmp, ut1_dir)
    log = open(tmp / "e2guardian.out", "ab")  # noqa: SIM115
    proc = subprocess.Popen([E2G, "-N", "-c", str(main)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + timeout  # loading 600k domains takes a while
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"e2guardian exited {proc.returncode}: "
                               f"{(tmp / 'e2guardian.out').read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"e2guardian did not listen on {port} within {timeout}s")


def stop_e2guardian(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL: e2guardian waits for its workers and can take long to exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
