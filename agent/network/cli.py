"""`kalkan-agent network watch|scan-pcap`: the network checks by hand.

    kalkan-agent network watch [--iface eth0] [--policy bundle.json] [--duration 60]
    kalkan-agent network scan-pcap capture.pcap [--policy bundle.json]

Both print one JSON line per event they would send; `--gateway-ip`, `--gateway-mac`,
`--dhcp-server`, `--dns-resolver` and `--ipv6-router` override the policy file's network section.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policy_server.protocol import NetworkSection, PolicyBundle, Subject, make_event, validation_message


class _PrintSink:
    """Prints each event as one JSON line (validated exactly like the outbox would)."""

    def emit(self, event_type: str, data: Any, *, subject: Subject | None = None,
             clauses: list[str] | None = None) -> str:
        event = make_event(event_type, data, subject=subject, clauses=clauses)
        print(event.model_dump_json(), flush=True)
        return str(event.id)


def load_policy(args: argparse.Namespace) -> PolicyBundle:
    bundle = PolicyBundle()
    if args.policy:
        try:
            bundle = PolicyBundle.model_validate_json(Path(args.policy).read_text())
        except OSError as exc:
            raise SystemExit(f"kalkan-agent network: cannot read {args.policy}: {exc}") from None
        except ValidationError as exc:
            raise SystemExit(f"kalkan-agent network: {args.policy} is not a valid policy bundle: "
                             f"{validation_message(exc)}") from None
    section = bundle.network.model_dump()
    for flag, key in (("dhcp_server", "dhcp_servers"), ("dns_resolver", "dns_resolvers"),
                      ("gateway_mac", "gateway_macs"), ("ipv6_router", "ipv6_routers")):
        if getattr(args, flag):
            section[key] = getattr(args, flag)
    if args.gateway_ip:
        section["gateway_ip"] = args.gateway_ip
    return bundle.model_copy(update={"network": NetworkSection(**section)})


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", help="a policy bundle JSON file (default: an empty policy)")
    parser.add_argument("--gateway-ip")
    parser.add_argument("--gateway-mac", action="append", help="repeatable")
    parser.add_argument("--dhcp-server", action="append", help="repeatable")
    parser.add_argument("--dns-resolver", action="append", help="repeatable")
    parser.add_argument("--ipv6-router", action="append",
                        help="the school's IPv6 router: link-local address or MAC (repeatable)")


def cmd_watch(args: argparse.Namespace) -> int:
    from agent.collectors.base import CollectorContext
    from agent.collectors.network import NetworkCollector

    bundle = load_policy(args)
    ctx = CollectorContext(sink=_PrintSink(), state_dir=Path("."), seat=args.seat, policy=bundle,
                           log=logging.getLogger("kalkan.network"))
    try:
        collector = NetworkCollector(ctx, iface=args.iface, interval_s=args.interval)
    except ValueError as exc:
        print(f"kalkan-agent network: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    collector.start()
    if not collector.ready.wait(10):
        print(f"kalkan-agent network: capture did not start: {collector.health().detail}", file=sys.stderr)
        collector.stop()
        return 1
    print(json.dumps({"ready": True, "iface": collector.iface,
                      "gateway_ip": collector.monitor.config.gateway_ip}), file=sys.stderr, flush=True)
    done.wait(args.duration)
    collector.stop()
    print(json.dumps({"stopped": True, "packets": collector.monitor.packets}), file=sys.stderr, flush=True)
    return 0


def cmd_scan_pcap(args: argparse.Namespace) -> int:
    from agent.network.detectors import NetworkConfig
    from agent.network.pcap import analyze_pcap

    bundle = load_policy(args)
    try:
        config = NetworkConfig.from_section(bundle.network)
        emissions = analyze_pcap(Path(args.capture), config, interval_s=args.interval)
    except (FileNotFoundError, ValueError) as exc:
        print(f"kalkan-agent network: {exc}", file=sys.stderr)
        return 2
    sink = _PrintSink()
    for emission in emissions:
        sink.emit(emission.event_type, emission.data)
    return 0


def register(subparsers) -> None:
    network = subparsers.add_parser(
        "network", help="network checks: ARP spoofing, rogue DHCP and IPv6 routers, bypass")
    sub = network.add_subparsers(dest="network_command", required=True)
    watch = sub.add_parser("watch", help="capture live and print what would be reported")
    _common(watch)
    watch.add_argument("--iface", help="interface (default: the default route's)")
    watch.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    watch.add_argument("--interval", type=float, default=60.0, help="rate-limit interval, seconds")
    watch.add_argument("--seat")
    watch.set_defaults(func=cmd_watch)
    scan = sub.add_parser("scan-pcap", help="check a capture file")
    scan.add_argument("capture")
    _common(scan)
    scan.add_argument("--interval", type=float, default=60.0, help="rate-limit interval, seconds")
    scan.set_defaults(func=cmd_scan_pcap)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kalkan-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
