"""Which USB devices may be used (000 §6.5): pure functions, no sysfs.

Kinds come from the interface classes (bInterfaceClass/SubClass/Protocol):

| kind     | interfaces                                     | rule                               |
| -------- | ---------------------------------------------- | ---------------------------------- |
| hid      | 0x03 (keyboard, mouse, …)                      | always allowed                     |
| hub      | 0x09                                           | always allowed                     |
| storage  | 0x08 mass storage                              | only if on the school's allow-list |
| phone    | 0x06 still image (MTP/PTP)                     | only if on the allow-list          |
| network  | 0x02, 0x0a CDC (tethering bypasses the school  | only if on the allow-list          |
|          | network and its filter)                        |                                    |
| rndis    | 0xe0/01/03, 0xef/04/01 (Windows-style phone    | only if on the allow-list          |
|          | tethering)                                     |                                    |
| wireless | other 0xe0 (Bluetooth, …)                      | only if on the allow-list          |
| vendor   | 0xff vendor-specific (Android MTP/ADB, USB     | only if on the allow-list, unless  |
|          | Ethernet chips, serial adapters)               | the device is an input device      |
| other    | audio, video, printer, smart card, …           | allowed                            |

Storage together with HID is the BadUSB pattern (a "flash drive" that types
commands): always blocked, even if allow-listed.  A device whose interfaces
are only HID and hubs is never blocked, whatever the policy says: the keyboard
and mouse must never be locked out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from policy_server.protocol import UsbAllowEntry, UsbSection

if TYPE_CHECKING:  # only the type: this module stays free of sysfs
    from agent.platform.usb import SysfsUsbDevice

RESTRICTED = frozenset({"storage", "phone", "network", "rndis", "wireless", "vendor"})
INPUT_ONLY = frozenset({"hid", "hub"})

# reasons (stable codes: the server's rules and the web pages translate them)
ALLOWED_INPUT = "input_device"
ALLOWED_LIST = "allow_list"
ALLOWED_UNRESTRICTED = "not_restricted"
ALLOWED_NOT_ENFORCED = "enforcement_off"
BLOCKED_BADUSB = "badusb_storage_with_keyboard"
BLOCKED_NOT_LISTED = "not_on_allow_list"


def interface_kind(cls: int, subclass: int, protocol: int) -> str:
    if cls == 0x03:
        return "hid"
    if cls == 0x09:
        return "hub"
    if cls == 0x08:
        return "storage"
    if cls == 0x06:
        return "phone"
    if cls in (0x02, 0x0A):
        return "network"
    if (cls, subclass, protocol) in ((0xE0, 0x01, 0x03), (0xEF, 0x04, 0x01)):
        return "rndis"
    if cls == 0xE0:
        return "wireless"
    if cls == 0xFF:
        return "vendor"
    return "other"


def classify(device_class: int, interfaces: Iterable[tuple[int, int, int]]) -> list[str]:
    """The device's kinds, sorted; from the device class only when no interface is known."""
    kinds = {interface_kind(*iface) for iface in interfaces}
    if not kinds:
        kinds = {"hub"} if device_class == 0x09 else {"unknown"}
    return sorted(kinds)


@dataclass(frozen=True)
class UsbDecision:
    allow: bool
    reason: str
    kinds: tuple[str, ...]
    would_block: bool = False  # enforcement is off, but the device breaks the policy


def on_allow_list(
    vendor_id: str, product_id: str, serial: str | None, allow: Sequence[UsbAllowEntry]
) -> bool:
    """An entry matches vendor and product, and its serial unless it has none (any serial).
    A device without a serial matches only entries without a serial."""
    for entry in allow:
        if entry.vendor_id == vendor_id.lower() and entry.product_id == product_id.lower():
            if entry.serial is None or (serial is not None and entry.serial == serial):
                return True
    return False


def decide(
    *,
    vendor_id: str,
    product_id: str,
    serial: str | None,
    kinds: Sequence[str],
    allow: Sequence[UsbAllowEntry],
    enforce: bool = True,
) -> UsbDecision:
    kind_set = frozenset(kinds)
    kinds_t = tuple(sorted(kind_set))
    if kind_set <= INPUT_ONLY:
        return UsbDecision(True, ALLOWED_INPUT, kinds_t)  # never lock out the keyboard and mouse
    if "storage" in kind_set and "hid" in kind_set:
        verdict = UsbDecision(False, BLOCKED_BADUSB, kinds_t)
    else:
        restricted = kind_set & RESTRICTED
        if "hid" in kind_set and restricted == {"vendor"}:
            restricted = frozenset()  # gaming mice and keyboards carry a vendor interface for settings
        if not restricted:
            return UsbDecision(True, ALLOWED_UNRESTRICTED, kinds_t)
        if on_allow_list(vendor_id, product_id, serial, allow):
            return UsbDecision(True, ALLOWED_LIST, kinds_t)
        verdict = UsbDecision(False, BLOCKED_NOT_LISTED, kinds_t)
    if not enforce:
        return UsbDecision(True, ALLOWED_NOT_ENFORCED, kinds_t, would_block=True)
    return verdict


def decide_device(device: SysfsUsbDevice, section: UsbSection) -> UsbDecision:
    """The policy's decision about a device as read from sysfs (its kinds are in `.kinds`).

    The one path from a device to a decision, for the collector and `kalkan-agent usb list` alike.
    """
    return decide(
        vendor_id=device.vendor_id,
        product_id=device.product_id,
        serial=device.serial,
        kinds=classify(device.device_class, [(i.cls, i.subclass, i.protocol) for i in device.interfaces]),
        allow=section.allow,
        enforce=section.enforce,
    )


def only_input(kinds: Iterable[str]) -> bool:
    """The last guard before writing authorized=0."""
    kinds = frozenset(kinds)
    return bool(kinds) and kinds <= INPUT_ONLY
