"""A real `kalkan-agent run` in a subprocess, for end-to-end tests of every area.

    from tests.support.agent_process import AgentProcess
    from tests.support.server import KalkanServerProcess

    with KalkanServerProcess(tmp_path / "server") as server:
        agent = AgentProcess(tmp_path / "agent")
        agent.enroll(server, seat="seat-1")              # the real `kalkan-agent enroll`, pinned
        with agent.start(collectors=["heartbeat"], heartbeat_s=1):
            agent.emit("web.report", {"url": "http://x.test/"})   # as another process (the proxy) would
            agent.wait_status(lambda s: s["outbox"]["depth"] == 0)

* `.start(collectors=None, platform="fake", heartbeat_s=None, wrap=None)` waits until `status.json` is
  written; `.stop()` (SIGTERM, waits), `.kill()` (SIGKILL), `.running`.
* `.emit(type, data)` writes an event into the agent's outbox from the test process and
  returns its id; `.outbox()` opens the outbox; `.status()` reads status.json.
The agent's log goes to `state_dir/agent.log`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.outbox import Outbox, open_sink

REPO = Path(__file__).resolve().parents[2]


class AgentProcess:
    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "agent.cli", *args]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def enroll(self, server: Any, *, seat: str | None = None, room: str | None = "lab-1",
               fingerprint: str | None = None) -> subprocess.CompletedProcess:
        code = server.make_enrollment_code(room=room)
        cmd = self._cli("enroll", "--server", server.url, "--code", code, "--state-dir", str(self.state_dir),
                        "--fingerprint", fingerprint or server.fingerprint)
        if seat:
            cmd += ["--seat", seat]
        result = subprocess.run(cmd, cwd=REPO, env=self._env(), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"kalkan-agent enroll failed ({result.returncode}): {result.stderr}")
        return result

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "config.json").read_text())

    # ------------------------------------------------------------------ process

    def start(self, collectors: list[str] | None = None, platform: str = "fake",
              heartbeat_s: float | None = None, timeout: float = 30.0,
              wrap: list[str] | None = None) -> AgentProcess:
        status_file = self.state_dir / "status.json"
        status_file.unlink(missing_ok=True)
        cmd = self._cli("run", "--state-dir", str(self.state_dir), "--platform", platform,
                        "--status-interval", "0.5")
        if collectors is not None:
            cmd += ["--collectors", ",".join(collectors)]
        if heartbeat_s is not None:
            cmd += ["--heartbeat", str(heartbeat_s)]
        cmd = [*(wrap or []), *cmd]  # e.g. ["ip", "netns", "exec", NS]: the agent inside a seat's namespace
        log = open(self.state_dir / "agent.log", "ab")  # noqa: SIM115  (the child keeps it)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self._env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        # the agent writes its status before its collectors start: wait for them too
        while not status_file.exists() or self._still_starting():
            if self.proc.poll() is not None:
                raise RuntimeError(f"kalkan-agent run exited with {self.proc.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"kalkan-agent wrote no status within {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    def _still_starting(self) -> bool:
        try:
            return bool(json.loads((self.state_dir / "status.json").read_text()).get("starting"))
        except (OSError, ValueError):  # being replaced right now: look again
            return True

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        path = self.state_dir / "agent.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    # ------------------------------------------------------------------ state

    def outbox(self) -> Outbox:
        return Outbox(self.state_dir / "outbox.sqlite")

    def emit(self, event_type: str, data: Any) -> str:
        sink = open_sink(self.state_dir)  # as the proxy does: the enrolled seat on every event
        try:
            return sink.emit(event_type, data)
        finally:
            sink.outbox.close()

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool],
                    timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status is not None and predicate(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"agent status never matched within {timeout}s; last: {self.status()}\n"
                             f"{self.log_text()}")
