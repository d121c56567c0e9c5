"""The USB collector on a fake sysfs tree with synthetic hot-plug events."""

from __future__ import annotations

import time

import pytest

from agent.antivirus import media
from agent.platform.usb import PollingHotplug, SysfsUsb
from policy_server.protocol import CollectorState, PolicyBundle, UsbAllowEntry, UsbSection
from tests.usb.conftest import record


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def types_for(sink, name):
    return [e.type for e in sink.events if e.data["device"]["bus_path"] == name]


def test_present_keyboard_mouse_hub_are_reported_and_never_touched(lab, sink):
    bus = lab()
    for device in ("keyboard", "mouse", "hub", "keyboard_old_kernel"):
        bus.tree.plug(record(device))
    bus.collector.start()
    connected = sink.of_type("usb.connected")
    assert sorted(e.data["device"]["bus_path"] for e in connected) == ["1-1", "1-2", "1-4", "1-9"]
    assert not sink.of_type("usb.blocked")
    assert all(bus.tree.authorized(n) == "1" for n in ("1-1", "1-2", "1-4", "1-9"))
    keyboard = next(e.data["device"] for e in connected if e.data["device"]["bus_path"] == "1-1")
    assert keyboard["kinds"] == ["hid"] and keyboard["product"] == "Dell KB216 Wired Keyboard"
    assert connected[0].clauses == ["000 §6.5"]
    assert bus.collector.health().state == CollectorState.ok


@pytest.mark.parametrize(
    "device, reason",
    [
        ("flash_serial", "not_on_allow_list"),
        ("flash_no_serial", "not_on_allow_list"),
        ("phone_mtp", "not_on_allow_list"),
        ("rndis_tether", "not_on_allow_list"),
        ("badusb_combo", "badusb_storage_with_keyboard"),
    ],
)
def test_hot_plugged_restricted_devices_are_blocked(lab, sink, device, reason):
    bus = lab()
    bus.tree.plug(record("keyboard"))
    bus.collector.start()
    name = bus.plug(device)
    assert wait_until(lambda: bus.tree.authorized(name) == "0"), "authorized=0 written"
    blocked = sink.wait_for("usb.blocked")
    assert blocked[0].data["reason"] == reason and blocked[0].data["device"]["bus_path"] == name
    assert types_for(sink, name) == ["usb.connected", "usb.blocked"]
    assert bus.tree.authorized("1-1") == "1", "the keyboard is never deauthorised"


def test_allow_list_from_a_new_bundle_reauthorises_and_hands_storage_to_the_scanner(lab, sink):
    announced = []
    media.subscribe(announced.append)
    try:
        bus = lab()
        bus.collector.start()
        name = bus.plug("flash_serial")
        assert wait_until(lambda: bus.tree.authorized(name) == "0")
        entry = UsbAllowEntry(
            vendor_id="0781",
            product_id="5567",
            serial="4C530001230823117452",
            note="teacher's stick",
            added_by="responsible",
        )
        bus.collector.on_policy(PolicyBundle(version=2, usb=UsbSection(allow=[entry])))
        assert bus.tree.authorized(name) == "1"
        allowed = sink.of_type("usb.allowed")
        assert len(allowed) == 1 and allowed[0].data["reason"] == "allow_list_added"
        assert announced == [name]
        # unplug and plug again: allowed at once, no block, scanned again
        bus.unplug(name)
        assert wait_until(lambda: name not in bus.collector._seen)
        bus.plug("flash_serial")
        assert wait_until(lambda: len(sink.of_type("usb.allowed")) == 2)
        assert sink.of_type("usb.allowed")[1].data["reason"] == "allow_list"
        assert bus.tree.authorized(name) == "1" and len(sink.of_type("usb.blocked")) == 1
        assert announced == [name, name]
        # removed from the allow-list again: blocked
        bus.collector.on_policy(PolicyBundle(version=3))
        assert bus.tree.authorized(name) == "0" and len(sink.of_type("usb.blocked")) == 2
    finally:
        media.unsubscribe(announced.append)


def test_badusb_stays_blocked_when_allow_listed(lab, sink):
    entry = UsbAllowEntry(vendor_id="03eb", product_id="2401")
    bus = lab(PolicyBundle(usb=UsbSection(allow=[entry])))
    bus.collector.start()
    name = bus.plug("badusb_combo")
    assert wait_until(lambda: bus.tree.authorized(name) == "0")
    assert not sink.of_type("usb.allowed")


def test_enforcement_off_only_reports(lab, sink):
    bus = lab(PolicyBundle(usb=UsbSection(enforce=False)))
    bus.collector.start()
    name = bus.plug("flash_serial")
    sink.wait_for("usb.connected")
    time.sleep(0.1)
    assert bus.tree.authorized(name) == "1" and not sink.of_type("usb.blocked")
    assert sink.of_type("usb.connected")[0].data["reason"] == "enforcement_off"


def test_interface_events_do_not_repeat_events(lab, sink):
    from agent.platform.usb import UsbUevent

    bus = lab()
    bus.collector.start()
    name = bus.plug("phone_mtp")
    sink.wait_for("usb.blocked")
    for _ in range(3):
        bus.hotplug.push(UsbUevent("bind", name, "usb_interface"))
    time.sleep(0.2)
    assert types_for(sink, name) == ["usb.connected", "usb.blocked"]


def test_polling_fallback_sees_new_and_removed_devices(tmp_path):
    from agent.platform.usb import FakeUsbTree

    tree = FakeUsbTree(tmp_path / "sys")
    tree.plug(record("keyboard"))
    source = PollingHotplug(SysfsUsb(tree.root), interval_s=0.05)
    assert source.get(0.2) is None
    tree.plug(record("flash_serial"))
    event = source.get(1.0)
    assert (event.action, event.name) == ("add", "1-3")
    tree.unplug("1-3")
    assert source.get(1.0).action == "remove"


@pytest.mark.root
def test_netlink_listener_opens_on_this_kernel():
    from agent.platform.usb import NetlinkHotplug, open_hotplug

    source = NetlinkHotplug()
    try:
        assert source.get(0.05) is None or source.get(0.05).name
    finally:
        source.close()
    assert open_hotplug(SysfsUsb("/sys")).kind == "netlink"
    assert open_hotplug(SysfsUsb(tmp := "/nonexistent")).kind == "polling", tmp


def test_cli_lists_devices_with_decisions(tmp_path, capsys):
    from agent.cli import main
    from agent.platform.usb import FakeUsbTree

    tree = FakeUsbTree(tmp_path / "sys")
    tree.plug(record("keyboard"))
    tree.plug(record("badusb_combo"))
    assert main(["usb", "list", "--sysfs-root", str(tree.root), "--state-dir", str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert "413c:2113" in out and "03eb:2401" in out and "badusb_storage_with_keyboard" in out


def test_registry_builds_the_collectors_for_the_fake_platform(tmp_path, sink):
    from agent.collectors.base import CollectorContext
    from agent.collectors.registry import load_collector_class

    ctx = CollectorContext(sink=sink, state_dir=tmp_path, platform="fake")
    usb = load_collector_class("usb")(ctx)
    assert usb.fake_hotplug.kind == "fake"
    assert usb.adapter.root == tmp_path / "collectors" / "usb" / "fake-sys"
    usb.start()
    usb.stop()
    assert usb.health().state == CollectorState.ok
    antivirus = load_collector_class("antivirus")(ctx)
    assert antivirus.folder == tmp_path / "collectors" / "antivirus"
