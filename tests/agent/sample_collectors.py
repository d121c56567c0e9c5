"""Small collectors the runtime tests register under test names (not shipped)."""

from __future__ import annotations

from pathlib import Path

from agent.collectors.base import Collector, healthy
from policy_server.protocol import CollectorHealth, PolicyBundle


class Recording(Collector):
    name = "recording"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.policies: list[int] = [ctx.policy.version]
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True
        self.ctx.emit("web.report", {"url": "http://started.test/"})

    def stop(self) -> None:
        self.stopped = True

    def health(self) -> CollectorHealth:
        return healthy(f"platform {self.ctx.platform}")

    def on_policy(self, bundle: PolicyBundle) -> None:
        super().on_policy(bundle)
        self.policies.append(bundle.version)


class BrokenStart(Recording):
    def start(self) -> None:
        raise RuntimeError("clamd socket missing")


class BrokenHealth(Recording):
    def health(self) -> CollectorHealth:
        raise ZeroDivisionError("oops")


class WithUninstall(Recording):
    @classmethod
    def uninstall(cls, state_dir: Path) -> None:
        (Path(state_dir) / "uninstalled-marker").write_text("done")


class SlowStart(Recording):
    """A collector whose start() takes as long as the test wants (`release` ends it)."""

    release = None  # a threading.Event the test sets

    def start(self) -> None:
        assert self.release is not None and self.release.wait(30), "the test never released start()"
        super().start()
