"""`kalkan-agent usb list`: the USB devices of this workstation and what the policy says.

The line of a device gives what the responsible person needs to add it to the
allow-list on the server (vendor:product and serial).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.i18n import choose_language, message
from agent.platform.usb import SysfsUsb
from agent.state import StatePaths
from agent.usb.policy import decide_device
from policy_server.protocol import PolicyBundle

TEXT: dict[str, dict[str, str]] = {
    "allowed": {"en": "allowed", "ru": "разрешено", "ky": "уруксат берилген"},
    "blocked": {"en": "BLOCKED", "ru": "ЗАБЛОКИРОВАНО", "ky": "БӨГӨТТӨЛГӨН"},
    "none": {
        "en": "No USB devices found.",
        "ru": "USB-устройства не найдены.",
        "ky": "USB түзмөктөр табылган жок.",
    },
    "serial": {"en": "serial", "ru": "серийный номер", "ky": "сериялык номер"},
}


def _policy(state_dir: Path | None) -> PolicyBundle:
    try:
        return PolicyBundle.model_validate(json.loads(StatePaths.from_option(state_dir).policy.read_text()))
    except (OSError, ValueError):
        return PolicyBundle()


def cmd_list(args: argparse.Namespace) -> int:
    lang = choose_language()
    policy = _policy(args.state_dir).usb
    rows = []
    for device in SysfsUsb(args.sysfs_root).enumerate():
        decision = decide_device(device, policy)
        kinds = list(decision.kinds)
        rows.append(
            {
                "bus_path": device.name,
                "id": f"{device.vendor_id}:{device.product_id}",
                "serial": device.serial,
                "product": device.product,
                "kinds": kinds,
                "authorized": device.authorized,
                "allow": decision.allow,
                "reason": decision.reason,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    if not rows:
        print(message(TEXT, "none", lang))
    for row in rows:
        verdict = message(TEXT, "allowed" if row["allow"] else "blocked", lang)
        serial = f"  {message(TEXT, 'serial', lang)} {row['serial']}" if row["serial"] else ""
        print(
            f"{row['bus_path']:8} {row['id']}  {verdict:12} {row['reason']:30} {','.join(row['kinds']):16} "
            f"{row['product'] or ''}{serial}"
        )
    return 0


def register(subparsers) -> None:
    usb = subparsers.add_parser("usb", help="USB devices and the USB policy")
    usb_sub = usb.add_subparsers(dest="usb_command", required=True)
    listing = usb_sub.add_parser("list", help="list USB devices with the policy's decision")
    listing.add_argument("--sysfs-root", type=Path, default=Path("/sys"), help="sysfs root (default /sys)")
    listing.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory (default $KALKAN_AGENT_STATE or /var/lib/kalkan-agent)",
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
