"""USB platform adapter: read devices from sysfs, (de)authorise them, hear hot-plug events.

One adapter for the real machine and the tests: `SysfsUsb(root)` reads
`<root>/bus/usb/devices/*` (root `/sys` on a workstation, a temporary folder
written by `FakeUsbTree` in tests), exactly as USBGuard's Linux backend does:

* identity: idVendor, idProduct, serial, manufacturer, product, bDeviceClass;
* interfaces: parsed from the raw `descriptors` attribute, which exists as soon
  as the device does (even before it is configured or when it is deauthorised),
  falling back to the `<name>:<cfg>.<n>/bInterfaceClass` folders;
* blocking: write `0` to `authorized` (the kernel unbinds every driver).

Hot-plug sources, all with `get(timeout) -> UsbUevent | None`:
* `NetlinkHotplug`: the kernel's uevents (NETLINK_KOBJECT_UEVENT, group 1),
  the fastest path, before udev even runs its rules;
* `PollingHotplug`: compares the device list every `interval_s` (fallback when
  netlink is unavailable, e.g. inside some containers);
* `FakeHotplug`: synthetic events that tests (and `--platform fake`) push.
"""

from __future__ import annotations

import os
import queue
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1


@dataclass(frozen=True)
class UsbInterfaceInfo:
    cls: int
    subclass: int
    protocol: int


@dataclass(frozen=True)
class SysfsUsbDevice:
    name: str  # bus path, e.g. "1-1.2"
    vendor_id: str
    product_id: str
    serial: str | None
    manufacturer: str | None
    product: str | None
    device_class: int
    authorized: bool
    interfaces: tuple[UsbInterfaceInfo, ...]


def parse_descriptors(raw: bytes) -> tuple[int, tuple[UsbInterfaceInfo, ...]]:
    """(bDeviceClass, interfaces) from the sysfs `descriptors` blob (pure).

    The blob is the 18-byte device descriptor followed by the configuration
    descriptors with their interface (type 4) descriptors.  Alternate settings
    repeat an interface; they are kept once.
    """
    if len(raw) < 18 or raw[1] != 1:
        raise ValueError("not a USB device descriptor")
    device_class = raw[4]
    interfaces: list[UsbInterfaceInfo] = []
    offset = raw[0]
    while offset + 2 <= len(raw):
        length, kind = raw[offset], raw[offset + 1]
        if length < 2:
            break  # malformed: stop rather than loop forever
        if kind == 4 and length >= 9 and offset + 9 <= len(raw):
            info = UsbInterfaceInfo(raw[offset + 5], raw[offset + 6], raw[offset + 7])
            if info not in interfaces:
                interfaces.append(info)
        offset += length
    return device_class, tuple(interfaces)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _hex(text: str | None, default: int = 0) -> int:
    try:
        return int(text, 16) if text else default
    except ValueError:
        return default


class SysfsUsb:
    def __init__(self, root: str | Path = "/sys") -> None:
        self.root = Path(root)
        self.devices_dir = self.root / "bus" / "usb" / "devices"

    @staticmethod
    def is_device_name(name: str) -> bool:
        # "1-1.2" is a device; "1-1:1.0" an interface; "usb1" a root hub (never touched)
        return ":" not in name and not name.startswith("usb") and "-" in name

    def names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.devices_dir) if self.is_device_name(n))
        except FileNotFoundError:
            return []

    def read(self, name: str) -> SysfsUsbDevice | None:
        """The device's attributes, or None if it is gone or not a USB device."""
        folder = self.devices_dir / name
        vendor, product_id = _read(folder / "idVendor"), _read(folder / "idProduct")
        if not vendor or not product_id:
            return None
        device_class = _hex(_read(folder / "bDeviceClass"))
        interfaces: tuple[UsbInterfaceInfo, ...] = ()
        try:
            device_class, interfaces = parse_descriptors((folder / "descriptors").read_bytes())
        except (OSError, ValueError):
            interfaces = self._interfaces_from_folders(folder, name)
        return SysfsUsbDevice(
            name=name,
            vendor_id=vendor.lower(),
            product_id=product_id.lower(),
            serial=_read(folder / "serial") or None,
            manufacturer=_read(folder / "manufacturer") or None,
            product=_read(folder / "product") or None,
            device_class=device_class,
            authorized=_read(folder / "authorized") != "0",
            interfaces=interfaces,
        )

    @staticmethod
    def _interfaces_from_folders(folder: Path, name: str) -> tuple[UsbInterfaceInfo, ...]:
        found = []
        try:
            children = sorted(p for p in folder.iterdir() if p.name.startswith(name + ":"))
        except OSError:
            return ()
        for child in children:
            info = UsbInterfaceInfo(
                _hex(_read(child / "bInterfaceClass")),
                _hex(_read(child / "bInterfaceSubClass")),
                _hex(_read(child / "bInterfaceProtocol")),
            )
            if info not in found:
                found.append(info)
        return tuple(found)

    def enumerate(self) -> list[SysfsUsbDevice]:
        return [device for name in self.names() if (device := self.read(name)) is not None]

    def set_authorized(self, name: str, authorized: bool) -> None:
        """Write the kernel's `authorized` attribute (raises OSError if the device is gone)."""
        with open(self.devices_dir / name / "authorized", "w") as handle:
            handle.write("1" if authorized else "0")


# --------------------------------------------------------------------------- hot-plug


@dataclass(frozen=True)
class UsbUevent:
    action: str  # add, remove, bind, unbind, change
    name: str  # the device's bus path ("1-1.2"), also for its interfaces' events
    devtype: str = ""  # usb_device | usb_interface
    received: float = field(default_factory=time.monotonic, compare=False)


def parse_uevent(message: bytes) -> UsbUevent | None:
    """A kernel uevent for a USB device or interface, else None (pure)."""
    parts = message.split(b"\0")
    fields: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.decode(errors="replace").partition("=")
        if sep:
            fields[key] = value
    if fields.get("SUBSYSTEM") != "usb" or "DEVPATH" not in fields:
        return None
    devtype = fields.get("DEVTYPE", "")
    if devtype not in ("usb_device", "usb_interface"):
        return None
    last = fields["DEVPATH"].rstrip("/").rsplit("/", 1)[-1]
    name = last.split(":", 1)[0]
    if not SysfsUsb.is_device_name(name):
        return None
    return UsbUevent(fields.get("ACTION", ""), name, devtype)


class HotplugSource(Protocol):
    kind: str

    def get(self, timeout: float) -> UsbUevent | None: ...

    def close(self) -> None: ...


class FakeHotplug:
    """Synthetic uevents (tests, `--platform fake`)."""

    kind = "fake"

    def __init__(self) -> None:
        self._queue: queue.Queue[UsbUevent] = queue.Queue()

    def push(self, event: UsbUevent) -> None:
        self._queue.put(event)

    def get(self, timeout: float) -> UsbUevent | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        pass


class NetlinkHotplug:
    kind = "netlink"

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT
        )
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, KERNEL_GROUP))
        except OSError:
            self.sock.close()
            raise

    def get(self, timeout: float) -> UsbUevent | None:
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                return None  # ENOBUFS after a flood: the caller re-enumerates on its own schedule
            event = parse_uevent(message)
            if event is not None:
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)

    def close(self) -> None:
        self.sock.close()


class PollingHotplug:
    """Fallback: compare the device list every `interval_s`."""

    kind = "polling"

    def __init__(self, adapter: SysfsUsb, interval_s: float = 0.1) -> None:
        self.adapter = adapter
        self.interval_s = interval_s
        self._known = set(adapter.names())
        self._pending: list[UsbUevent] = []
        self._last = 0.0

    def get(self, timeout: float) -> UsbUevent | None:
        deadline = time.monotonic() + timeout
        while not self._pending:
            wait = self._last + self.interval_s - time.monotonic()
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    return None
                time.sleep(wait)
            self._last = time.monotonic()
            current = set(self.adapter.names())
            self._pending = [UsbUevent("add", n, "usb_device") for n in sorted(current - self._known)]
            self._pending += [UsbUevent("remove", n, "usb_device") for n in sorted(self._known - current)]
            self._known = current
        return self._pending.pop(0)

    def close(self) -> None:
        pass


def open_hotplug(adapter: SysfsUsb, prefer: str = "netlink", poll_interval_s: float = 0.1) -> HotplugSource:
    """The kernel's uevents if this machine gives them to us, else polling."""
    if prefer == "fake":
        return FakeHotplug()
    if prefer == "netlink" and adapter.root == Path("/sys"):
        try:
            return NetlinkHotplug()
        except OSError:
            pass
    return PollingHotplug(adapter, poll_interval_s)


# --------------------------------------------------------------------------- fake tree


def build_descriptors(device_class: int, interfaces: list[tuple[int, int, int]]) -> bytes:
    """A synthetic `descriptors` blob: device descriptor + one configuration with the interfaces."""
    device = bytes([18, 1, 0x00, 0x02, device_class, 0, 0, 64]) + bytes(10)
    body = b"".join(bytes([9, 4, i, 0, 1, c, s, p, 0]) for i, (c, s, p) in enumerate(interfaces))
    total = 9 + len(body)
    config = bytes([9, 2, total & 0xFF, total >> 8, len(interfaces), 1, 0, 0x80, 50])
    return device + config + body


class FakeUsbTree:
    """Writes recorded devices into a sysfs-shaped folder, like the kernel would.

    A record (see tests/usb/devices/*.json) has: name, idVendor, idProduct,
    optional serial/manufacturer/product, bDeviceClass, interfaces
    [[class, subclass, protocol], ...] as hex strings, and optionally
    "descriptors": false to leave out the raw descriptors attribute.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.devices_dir = self.root / "bus" / "usb" / "devices"
        self.real_dir = self.root / "devices" / "pci0000:00" / "0000:00:14.0" / "usb1"
        self.devices_dir.mkdir(parents=True, exist_ok=True)
        self.real_dir.mkdir(parents=True, exist_ok=True)
        (self.real_dir / "authorized_default").write_text("1\n")

    def plug(self, record: dict[str, Any], name: str | None = None) -> str:
        name = name or record["name"]
        folder = self.real_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        interfaces = [tuple(int(x, 16) for x in iface) for iface in record.get("interfaces", [])]
        device_class = int(record.get("bDeviceClass", "00"), 16)
        attributes = {
            "idVendor": record["idVendor"],
            "idProduct": record["idProduct"],
            "bDeviceClass": f"{device_class:02x}",
            "authorized": "1",
        }
        for key in ("serial", "manufacturer", "product"):
            if record.get(key) is not None:
                attributes[key] = record[key]
        for key, value in attributes.items():
            (folder / key).write_text(value + "\n")
        if record.get("descriptors", True):
            (folder / "descriptors").write_bytes(build_descriptors(device_class, interfaces))
        for index, (cls, sub, proto) in enumerate(interfaces):
            iface = folder / f"{name}:1.{index}"
            iface.mkdir(exist_ok=True)
            (iface / "bInterfaceClass").write_text(f"{cls:02x}\n")
            (iface / "bInterfaceSubClass").write_text(f"{sub:02x}\n")
            (iface / "bInterfaceProtocol").write_text(f"{proto:02x}\n")
            link = self.devices_dir / iface.name
            if not link.is_symlink():
                link.symlink_to(iface)
        link = self.devices_dir / name
        if not link.is_symlink():
            link.symlink_to(folder)
        return name

    def unplug(self, name: str) -> None:
        import shutil

        for link in list(self.devices_dir.iterdir()):
            if link.name == name or link.name.startswith(name + ":"):
                link.unlink()
        shutil.rmtree(self.real_dir / name, ignore_errors=True)

    def authorized(self, name: str) -> str:
        return (self.real_dir / name / "authorized").read_text().strip()
