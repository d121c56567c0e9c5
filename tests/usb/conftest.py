"""USB fixtures: a fake sysfs tree replaying recorded devices, synthetic hot-plug events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.collectors.base import CollectorContext
from agent.collectors.usb import UsbCollector
from agent.platform.usb import FakeHotplug, FakeUsbTree, UsbUevent
from policy_server.protocol import PolicyBundle
from tests.support.recording_sink import RecordingSink

DEVICES = Path(__file__).parent / "devices"


def record(name: str) -> dict:
    return json.loads((DEVICES / f"{name}.json").read_text())


class Lab:
    """A workstation's USB bus: the fake tree, the event source and the collector."""

    def __init__(self, root: Path, sink: RecordingSink, bundle: PolicyBundle) -> None:
        self.tree = FakeUsbTree(root / "sys")
        self.hotplug = FakeHotplug()
        self.sink = sink
        ctx = CollectorContext(sink=sink, state_dir=root / "state", policy=bundle, platform="fake")
        self.collector = UsbCollector(ctx, sysfs_root=self.tree.root, hotplug=self.hotplug)

    def plug(self, device: str, name: str | None = None) -> str:
        bus_name = self.tree.plug(record(device), name)
        self.hotplug.push(UsbUevent("add", bus_name, "usb_device"))
        return bus_name

    def unplug(self, name: str) -> None:
        self.tree.unplug(name)
        self.hotplug.push(UsbUevent("remove", name, "usb_device"))


@pytest.fixture()
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture()
def lab(tmp_path, sink):
    labs = []

    def make(bundle: PolicyBundle | None = None) -> Lab:
        made = Lab(tmp_path / f"lab{len(labs)}", sink, bundle or PolicyBundle())
        labs.append(made)
        return made

    yield make
    for made in labs:
        made.collector.stop()
