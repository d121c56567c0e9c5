"""Upgrades ordered from the console (docs/operations.md "Upgrading seats from the console").

Two halves:

* `UpgradeLoop` runs in the agent (thread `agent-upgrade`): when the push channel says a rollout
  started (`wake`, after a random wait of up to `jitter` seconds: a district's seats all hear it
  at once) and otherwise every `interval` seconds (15 minutes) it first hands the server the
  result of the last upgrade if the server has not taken it yet (`upgrade-result.json`), then
  asks `GET /api/v1/upgrade`; an order for a version it has not run
  yet starts the runner *outside the agent's own service* (`systemd-run --unit
  kalkan-agent-upgrade-N`, else a detached process): the package manager stops and restarts the
  agent, which must not take the runner down with it.

* `run_upgrade` (`kalkan-agent upgrade --version V --rollout N`): fetches the package of that
  version from the server's repository over the agent's pinned connection, installs it with the
  package manager, waits until the new agent runs, and when any step fails installs again the
  version it had (fetched the same way: the server keeps every version) and says why.  The result
  goes to `upgrade-result.json` and as an `agent.upgrade` event into the outbox.

The package manager: `apt-get install` of the fetched file (Debian dependencies from the school's
mirror, if a new version needs one), or, with `KALKAN_UPGRADE_DPKG_ROOT` set (tests), `dpkg
--root` into that scratch root.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("kalkan.agent.upgrade")

UPGRADE_PATH = "/api/v1/upgrade"
RESULT_PATH = "/api/v1/upgrade/result"
PACKAGE = "kalkan-agent"
RESULT_FILE = "upgrade-result.json"
STARTED_FILE = "upgrade-started.json"
START_WAIT_S = float(os.environ.get("KALKAN_UPGRADE_START_WAIT_S", "60"))
RESULT_CHECK_S = 2.0  # how often the loop looks for a result the runner wrote (a stat)


def _arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "amd64"
    except OSError:
        return "amd64"


class PackageManager:
    """apt-get/dpkg on this machine, or dpkg in a scratch root (`KALKAN_UPGRADE_DPKG_ROOT`)."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root if root is not None else os.environ.get("KALKAN_UPGRADE_DPKG_ROOT") or None

    def _dpkg_args(self) -> list[str]:
        return ["--root", self.root, "--force-script-chrootless", "--force-not-root"] if self.root else []

    def installed(self) -> str:
        out = subprocess.run(["dpkg-query", *(["--root", self.root] if self.root else []), "-W",
                              "-f=${Status} ${Version}", PACKAGE], capture_output=True, text=True, timeout=60)
        parts = out.stdout.split()
        return parts[3] if out.returncode == 0 and len(parts) == 4 and parts[2] == "installed" else ""

    def install(self, deb: Path) -> tuple[bool, str]:
        if self.root:
            argv = ["dpkg", *self._dpkg_args(), "-i", str(deb)]
        elif shutil.which("apt-get"):
            argv = ["apt-get", "install", "-y", "--allow-downgrades", "--no-install-recommends",
                    "-o", "Dpkg::Options::=--force-confold", str(deb)]
        else:
            argv = ["dpkg", "-i", str(deb)]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        out = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
        text = (out.stdout + out.stderr).strip()
        return out.returncode == 0, text

    def running(self, version: str, wait_s: float) -> tuple[bool, str]:
        """True when `version` is installed and (under systemd) the agent's service is active."""
        deadline = time.monotonic() + wait_s
        while True:
            have = self.installed()
            active = True
            if not self.root and Path("/run/systemd/system").is_dir():
                state = subprocess.run(["systemctl", "is-active", "kalkan-agent.service"],
                                       capture_output=True, text=True).stdout.strip()
                active = state == "active"
            if have == version and active:
                return True, ""
            if time.monotonic() > deadline:
                why = (f"version {have or 'none'} installed, not {version}" if have != version
                       else "the agent's service did not stay active")
                return False, why
            time.sleep(1.0)


NOISE = ("debconf: ", "Reading ", "Building ", "(Reading database", "Preparing to unpack", "Unpacking ",
         "Selecting ", "Note, selecting", "Processing triggers", "W: Download is performed unsandboxed",
         "N: Download is performed unsandboxed", "0 upgraded", "1 upgraded", "Need to get", "After this")


def _last_lines(text: str, n: int = 8) -> str:
    """The package manager's words that say why (its progress lines left out), the last `n`."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(NOISE)]
    return " | ".join(lines[-n:])[-480:]


def fetch(client, version: str, folder: Path) -> Path:
    """The package of `version` from the server's repository, over the agent's pinned connection."""
    name = f"{PACKAGE}_{version}_{_arch()}.deb"
    folder.mkdir(parents=True, exist_ok=True)
    response = client.http.get(f"/install/apt/{name}", timeout=300.0)
    if response.status_code != 200:
        raise RuntimeError(f"the server has no {name} ({response.status_code})")
    path = folder / name
    path.write_bytes(response.content)
    return path


def run_upgrade(state_dir: Path, *, version: str, rollout: int, client=None, pm: PackageManager | None = None,
                start_wait_s: float = START_WAIT_S) -> dict[str, Any]:
    """Upgrade to `version`; roll back to the version before when it fails.  Returns the result."""
    from agent.outbox import open_sink

    pm = pm or PackageManager()
    own_client = client is None
    if own_client:
        client = _client(state_dir)
    work = state_dir / "upgrade"
    before = pm.installed()
    result: dict[str, Any] = {"rollout": rollout, "from_version": before, "to_version": version}
    try:
        if before == version:
            result.update(state="upgraded", reason="", reason_code="")
        else:
            ok, why, code = False, "", ""
            try:
                deb = fetch(client, version, work)
                ok, output = pm.install(deb)
                if not ok:
                    why, code = _last_lines(output), "install_failed"
                else:
                    ok, why = pm.running(version, start_wait_s)
                    code = "" if ok else "not_running"
            except Exception as exc:  # noqa: BLE001 — TransportError, OSError, a refusal: all say why
                why, code = str(exc), "fetch_failed"
            if ok:
                result.update(state="upgraded", reason="", reason_code="")
            elif not before:
                result.update(state="failed", reason=why, reason_code=code)
            else:
                back_ok, back_why = False, ""
                try:
                    old = fetch(client, before, work)
                    back_ok, output = pm.install(old)
                    if back_ok:
                        back_ok, back_why = pm.running(before, start_wait_s)
                    else:
                        back_why = _last_lines(output)
                except Exception as exc:  # noqa: BLE001
                    back_why = str(exc)
                if back_ok:
                    result.update(state="rolled_back", reason=why, reason_code=code)
                else:
                    result.update(state="failed", reason=f"{why} | {before}: {back_why}",
                                  reason_code="rollback_failed")
    finally:
        if own_client:
            client.close()
        shutil.rmtree(work, ignore_errors=True)
    result["finished_at"] = time.time()
    tmp = state_dir / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, state_dir / RESULT_FILE)
    try:
        sink = open_sink(str(state_dir))
        try:
            sink.emit("agent.upgrade", {k: v for k, v in result.items() if k != "finished_at"})
        finally:
            close = getattr(sink, "close", None)
            if close:
                close()
    except Exception as exc:  # noqa: BLE001 — the result file still reaches the server
        log.warning("upgrade: the event could not be stored: %s", exc)
    return result


def _client(state_dir: Path):
    from agent.server_client import ServerClient
    from agent.state import AgentState, StatePaths

    state = AgentState(StatePaths.from_option(str(state_dir)))
    config = state.load_config()
    return ServerClient(config.server_url, token=state.read_token(), sha256=config.pin_set())


def runner_argv(state_dir: Path, version: str, rollout: int) -> list[str]:
    return [sys.executable, "-m", "agent.cli", "upgrade", "--state-dir", str(state_dir),
            "--version", version, "--rollout", str(rollout)]


class UpgradeLoop:
    def __init__(self, state_dir: Path, *, interval_s: float | None = None,
                 jitter_s: float | None = None) -> None:
        self.state_dir = Path(state_dir)
        # The push is the fast path; the poll is for a push channel that is down, and a slot a
        # seat frees is taken by the next seat that polls (thousands of seats: every few seconds).
        self.interval_s = interval_s or float(os.environ.get("KALKAN_UPGRADE_POLL_S", "900"))
        if jitter_s is None:
            jitter_s = float(os.environ.get("KALKAN_UPGRADE_JITTER_S", "20"))
        self.jitter_s = jitter_s
        self.last_error: str | None = None
        self._woken = threading.Event()
        self._result_tried: float | None = None  # the result file's time when last handed up

    def wake(self) -> None:
        """A rollout started (the push channel), or the agent stops: ask now."""
        self._woken.set()

    def _started(self) -> int | None:
        try:
            return int(json.loads((self.state_dir / STARTED_FILE).read_text())["rollout"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def report_result(self, client) -> bool:
        path = self.state_dir / RESULT_FILE
        if not path.exists():
            return False
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            return False
        response = client.http.post(RESULT_PATH, json={k: v for k, v in result.items() if k != "finished_at"},
                                    headers={"Content-Type": "application/json"})
        if response.status_code in (200, 404, 409):  # taken, or the rollout is gone: either way done
            path.unlink(missing_ok=True)
            return True
        return False

    def step(self, client) -> dict | None:
        """One round: report, ask, maybe start the runner.  Returns the order started, if any."""
        self.report_result(client)
        response = client.http.get(UPGRADE_PATH)
        if response.status_code != 200:
            return None
        order = response.json()
        rollout, version = int(order["rollout"]), str(order["version"])
        if self._started() == rollout:
            return None  # this order runs already (or ran; its result goes up first thing)
        (self.state_dir / STARTED_FILE).write_text(json.dumps({"rollout": rollout, "version": version}))
        self.launch(version, rollout)
        return order

    def launch(self, version: str, rollout: int) -> None:
        argv = runner_argv(self.state_dir, version, rollout)
        env = {k: v for k, v in os.environ.items()
               if k.startswith("KALKAN_") or k in ("PATH", "LANG", "PYTHONPATH")}
        if Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") and not os.environ.get(
                "KALKAN_UPGRADE_DPKG_ROOT"):
            unit = f"kalkan-agent-upgrade-{rollout}"
            subprocess.run(["systemd-run", "--quiet", "--collect", f"--unit={unit}",
                            *[f"--setenv={k}={v}" for k, v in env.items()], *argv], check=True, timeout=30)
            log.info("upgrade to %s started (rollout %s, unit %s)", version, rollout, unit)
        else:
            with open(self.state_dir / "upgrade.log", "ab") as out:
                subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                 cwd="/")
            log.info("upgrade to %s started (rollout %s)", version, rollout)

    def _new_result(self) -> float | None:
        """The time of a result file not yet tried (the runner wrote it while this agent ran on:
        it goes up at once, not at the next poll)."""
        try:
            written = (self.state_dir / RESULT_FILE).stat().st_mtime
        except OSError:
            return None
        return written if written != self._result_tried else None

    def run(self, client, stop: threading.Event) -> None:
        next_round = 0.0
        while not stop.is_set():
            result = self._new_result()
            if time.monotonic() >= next_round or result is not None:
                self._result_tried = result if result is not None else self._result_tried
                try:
                    self.step(client)
                    self.last_error = None
                except Exception as exc:  # noqa: BLE001 — the loop keeps going; the next round retries
                    self.last_error = str(exc)
                    log.debug("upgrade poll: %s", exc)
                next_round = time.monotonic() + self.interval_s
            if self._woken.wait(RESULT_CHECK_S) and not stop.is_set():  # a rollout started (a push)
                self._woken.clear()
                stop.wait(random.uniform(0, self.jitter_s))
                next_round = 0.0
