"""The pure USB policy and the sysfs/uevent parsers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.platform.usb import build_descriptors, parse_descriptors, parse_uevent
from agent.usb.policy import classify, decide, only_input
from policy_server.protocol import UsbAllowEntry
from tests.usb.conftest import DEVICES, record


def decision_for(name, allow=(), enforce=True):
    rec = record(name)
    kinds = classify(int(rec["bDeviceClass"], 16), [tuple(int(x, 16) for x in i) for i in rec["interfaces"]])
    return decide(
        vendor_id=rec["idVendor"],
        product_id=rec["idProduct"],
        serial=rec.get("serial"),
        kinds=kinds,
        allow=list(allow),
        enforce=enforce,
    )


@pytest.mark.parametrize(
    "name, allow, reason",
    [
        ("keyboard", True, "input_device"),
        ("mouse", True, "input_device"),
        ("hub", True, "input_device"),
        ("keyboard_old_kernel", True, "input_device"),
        ("gaming_mouse", True, "not_restricted"),
        ("webcam", True, "not_restricted"),
        ("flash_serial", False, "not_on_allow_list"),
        ("flash_no_serial", False, "not_on_allow_list"),
        ("phone_mtp", False, "not_on_allow_list"),
        ("rndis_tether", False, "not_on_allow_list"),
        ("bluetooth", False, "not_on_allow_list"),
        ("badusb_combo", False, "badusb_storage_with_keyboard"),
    ],
)
def test_recorded_devices_without_allow_list(name, allow, reason):
    decision = decision_for(name)
    assert (decision.allow, decision.reason) == (allow, reason)


def test_allow_list_matching_by_serial():
    exact = UsbAllowEntry(vendor_id="0781", product_id="5567", serial="4C530001230823117452")
    other = UsbAllowEntry(vendor_id="0781", product_id="5567", serial="SOMEONE-ELSES")
    any_serial = UsbAllowEntry(vendor_id="090c", product_id="1000")
    assert decision_for("flash_serial", [exact]).reason == "allow_list"
    assert not decision_for("flash_serial", [other]).allow
    # a stick without a serial matches only a model-wide entry
    assert not decision_for(
        "flash_no_serial", [UsbAllowEntry(vendor_id="090c", product_id="1000", serial="X")]
    ).allow
    assert decision_for("flash_no_serial", [any_serial]).allow
    # the classroom's own phone for a lesson
    phone = UsbAllowEntry(vendor_id="04e8", product_id="6860", serial="R58M12ABCDE")
    assert decision_for("phone_mtp", [phone]).allow


def test_badusb_is_blocked_even_if_allow_listed():
    entry = UsbAllowEntry(vendor_id="03eb", product_id="2401")
    assert decision_for("badusb_combo", [entry]).reason == "badusb_storage_with_keyboard"


def test_enforcement_off_reports_but_allows():
    decision = decision_for("flash_serial", enforce=False)
    assert decision.allow and decision.would_block and decision.reason == "enforcement_off"


KINDS = st.sampled_from(["hid", "hub"])


@given(
    st.lists(
        st.tuples(st.sampled_from([0x03, 0x09]), st.integers(0, 255), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
    st.lists(
        st.builds(
            UsbAllowEntry,
            vendor_id=st.from_regex(r"^[0-9a-f]{4}$", fullmatch=True),
            product_id=st.from_regex(r"^[0-9a-f]{4}$", fullmatch=True),
        ),
        max_size=3,
    ),
)
def test_input_only_devices_are_never_blocked(interfaces, enforce, allow):
    kinds = classify(0, interfaces)
    assert only_input(kinds)
    assert decide(
        vendor_id="1234", product_id="5678", serial=None, kinds=kinds, allow=allow, enforce=enforce
    ).allow


def test_descriptor_parser_skips_class_and_endpoint_descriptors():
    # a real keyboard's layout: interface, HID class descriptor (0x21), endpoint (0x05), second interface …
    device = bytes([18, 1, 0x10, 0x01, 0, 0, 0, 8, 0xD9, 0x04, 0x03, 0x16, 0, 1, 1, 2, 0, 1])
    iface0 = bytes([9, 4, 0, 0, 1, 3, 1, 1, 0])
    hid = bytes([9, 0x21, 0x10, 0x01, 0, 1, 0x22, 0x41, 0])
    endpoint = bytes([7, 5, 0x81, 3, 8, 0, 10])
    iface1 = bytes([9, 4, 1, 0, 1, 3, 0, 0, 0])
    body = iface0 + hid + endpoint + iface1 + hid + endpoint
    config = bytes([9, 2, 9 + len(body), 0, 2, 1, 0, 0xA0, 49])
    device_class, interfaces = parse_descriptors(device + config + body)
    assert device_class == 0
    assert [(i.cls, i.subclass, i.protocol) for i in interfaces] == [(3, 1, 1), (3, 0, 0)]
    assert parse_descriptors(build_descriptors(9, [(9, 0, 0)]))[0] == 9
    with pytest.raises(ValueError):
        parse_descriptors(b"\x00\x01")
    # a zero-length descriptor must not loop forever
    assert parse_descriptors(device + bytes([0, 4, 0, 0]))[1] == ()


def test_kernel_uevent_parsing():
    add = (
        b"add@/devices/pci0000:00/0000:00:14.0/usb1/1-3\0ACTION=add\0"
        b"DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-3\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0"
        b"PRODUCT=781/5567/100\0TYPE=0/0/0\0BUSNUM=001\0DEVNUM=007\0SEQNUM=4242\0"
    )
    event = parse_uevent(add)
    assert (event.action, event.name, event.devtype) == ("add", "1-3", "usb_device")
    iface = parse_uevent(
        b"bind@/devices/x/usb1/1-3/1-3:1.0\0ACTION=bind\0DEVPATH=/devices/x/usb1/1-3/1-3:1.0\0"
        b"SUBSYSTEM=usb\0DEVTYPE=usb_interface\0"
    )
    assert (iface.action, iface.name) == ("bind", "1-3")
    assert (
        parse_uevent(b"add@/devices/x/block/sdb\0ACTION=add\0DEVPATH=/devices/x/block/sdb\0SUBSYSTEM=block\0")
        is None
    )
    assert (
        parse_uevent(
            b"add@/devices/x/usb1\0ACTION=add\0DEVPATH=/devices/x/usb1\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0"
        )
        is None
    ), "root hubs are never handled"


def test_recorded_devices_are_valid_json():
    for path in DEVICES.glob("*.json"):
        rec = json.loads(path.read_text())
        assert {"name", "idVendor", "idProduct", "interfaces"} <= set(rec), path.name
