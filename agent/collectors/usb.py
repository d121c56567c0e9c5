"""The USB collector: every device is classified and allowed or blocked (000 §6.5).

One thread reads hot-plug events (kernel uevents, polling as fallback) and
for a new device: reads it from sysfs, decides (agent.usb.policy), writes
`authorized=0` if it must be blocked, and only *then* emits its events, so the
time to block does not include the outbox write.  A new policy bundle is
applied to the devices present: a device just added to the allow-list is
authorised again (`usb.allowed`), one removed from it is blocked.  Allowed
storage is handed to the antivirus collector for a media scan.

Platform "fake" (tests, demos): the sysfs tree is `<state>/collectors/usb/fake-sys`
and hot-plug events are pushed through `collector.hotplug` (a FakeHotplug).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from agent.antivirus import media
from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.platform.usb import FakeHotplug, HotplugSource, SysfsUsb, SysfsUsbDevice, open_hotplug
from agent.state import StatePaths
from agent.usb.policy import ALLOWED_LIST, UsbDecision, decide_device, only_input
from policy_server.protocol import CollectorHealth, PolicyBundle, UsbDevice, UsbEvent, UsbInterface

RESCAN_EVERY_S = 300.0  # a full re-enumeration now and then, in case an event was lost


@dataclass
class _Seen:
    identity: tuple
    decision: UsbDecision
    blocked_by_us: bool


def to_wire(device: SysfsUsbDevice, kinds: tuple[str, ...]) -> UsbDevice:
    return UsbDevice(
        vendor_id=device.vendor_id,
        product_id=device.product_id,
        serial=device.serial,
        manufacturer=device.manufacturer,
        product=device.product,
        bus_path=device.name,
        interfaces=[
            UsbInterface(cls=i.cls, subclass=i.subclass, protocol=i.protocol) for i in device.interfaces
        ],
        kinds=list(kinds),
    )


class UsbCollector(Collector):
    name = "usb"

    def __init__(
        self,
        ctx: CollectorContext,
        *,
        sysfs_root: str | Path | None = None,
        hotplug: HotplugSource | None = None,
        poll_interval_s: float = 0.1,  # a listdir of /sys/bus/usb/devices: cheap
    ) -> None:
        super().__init__(ctx)
        fake = ctx.platform == "fake"
        if sysfs_root is None:
            sysfs_root = (
                StatePaths(Path(ctx.state_dir)).collector_dir(self.name) / "fake-sys" if fake else "/sys"
            )
        self.adapter = SysfsUsb(sysfs_root)
        self.hotplug: HotplugSource = hotplug or open_hotplug(
            self.adapter, "fake" if fake else "netlink", poll_interval_s
        )
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._problem = ""
        self.blocked_count = 0

    # -- plug-in interface

    def start(self) -> None:
        self._stop.clear()
        self.rescan()
        self._thread = threading.Thread(target=self._loop, name="kalkan-usb", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
            self._thread = None
        self.hotplug.close()

    def health(self) -> CollectorHealth:
        if self._problem:
            return unhealthy(self._problem)
        return healthy(
            f"{len(self._seen)} devices, {self.blocked_count} blocked, events: {self.hotplug.kind}"
        )

    def on_policy(self, bundle: PolicyBundle) -> None:
        super().on_policy(bundle)
        with self._lock:
            for name in list(self._seen):
                self.evaluate(name, policy_changed=True)

    # -- the work

    def rescan(self) -> None:
        with self._lock:
            present = set(self.adapter.names())
            for name in sorted(present):
                self.evaluate(name)
            for name in set(self._seen) - present:
                del self._seen[name]

    def _loop(self) -> None:
        import time

        last_rescan = time.monotonic()
        while not self._stop.is_set():
            event = self.hotplug.get(timeout=0.2)
            try:
                if event is not None:
                    with self._lock:
                        if event.action == "remove" and event.devtype != "usb_interface":
                            self._seen.pop(event.name, None)
                        elif event.action in ("add", "bind", "change"):
                            self.evaluate(event.name)
                if time.monotonic() - last_rescan > RESCAN_EVERY_S:
                    last_rescan = time.monotonic()
                    self.rescan()
            except Exception as exc:  # noqa: BLE001 - keep watching; health says what failed
                self._problem = f"USB event handling failed: {exc}"
                self.ctx.log.exception("USB event handling failed")

    def evaluate(self, name: str, *, policy_changed: bool = False) -> UsbDecision | None:
        """Decide about one device and act; emit events for what changed."""
        device = self.adapter.read(name)
        if device is None:
            return None
        decision = decide_device(device, self.ctx.policy.usb)
        kinds = decision.kinds
        identity = (device.vendor_id, device.product_id, device.serial, kinds)
        previous = self._seen.get(name)
        new = previous is None or previous.identity != identity
        if not new and previous.decision == decision and not (decision.allow and previous.blocked_by_us):
            return decision  # nothing changed (e.g. the interfaces' own uevents)

        blocked_by_us = previous.blocked_by_us if previous and not new else False
        acted = ""
        if not decision.allow and not only_input(kinds):
            if device.authorized:
                try:
                    self.adapter.set_authorized(name, False)
                    acted = "blocked"
                except OSError as exc:
                    self._problem = f"cannot block USB device {name}: {exc}"
                    self.ctx.log.error("cannot block USB device %s: %s", name, exc)
            blocked_by_us = True
        elif decision.allow and blocked_by_us and not device.authorized:
            try:
                self.adapter.set_authorized(name, True)
                acted = "reauthorised"
            except OSError as exc:
                self.ctx.log.error("cannot authorise USB device %s again: %s", name, exc)
            blocked_by_us = False
        self._seen[name] = _Seen(identity, decision, blocked_by_us)

        wire = to_wire(device, kinds)
        if new:
            self.ctx.emit("usb.connected", UsbEvent(device=wire, reason=decision.reason))
        if not decision.allow:
            if new or acted == "blocked" or (previous and previous.decision.allow):
                self.blocked_count += 1
                self.ctx.emit("usb.blocked", UsbEvent(device=wire, reason=decision.reason))
        elif decision.reason == ALLOWED_LIST or acted == "reauthorised":
            if new or acted == "reauthorised" or (previous and previous.decision.reason != ALLOWED_LIST):
                reason = "allow_list_added" if policy_changed or acted == "reauthorised" else decision.reason
                self.ctx.emit("usb.allowed", UsbEvent(device=wire, reason=reason))
        if decision.allow and "storage" in kinds and (new or acted == "reauthorised"):
            media.announce_storage(name)  # the antivirus collector scans it once it is mounted
        return decision

    @property
    def fake_hotplug(self) -> FakeHotplug:
        if not isinstance(self.hotplug, FakeHotplug):
            raise TypeError("this collector does not use synthetic hot-plug events")
        return self.hotplug
