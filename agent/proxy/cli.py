"""`kalkan-agent proxy …`: the filtering proxy's own commands (for the school's IT person).

    kalkan-agent proxy ruleset [--proxy-uid N] [--check]   print the nftables ruleset for this policy
    kalkan-agent proxy install-ca CERT KEY                   trust the school CA (system, Firefox, Chromium)
    kalkan-agent proxy fetch-ca [--root DIR] [--json]        fetch the school CA from the server, install it
    kalkan-agent proxy remove                                remove the firewall table and the CA
"""

from __future__ import annotations

import argparse
import json
import pwd
import sys
from pathlib import Path


def _proxy_uid(value: int | None) -> int:
    if value is not None:
        return value
    try:
        return pwd.getpwnam("kalkan-proxy").pw_uid
    except KeyError:
        sys.exit("no OS user kalkan-proxy; create it (useradd --system kalkan-proxy) or pass --proxy-uid")


def cmd_ruleset(args: argparse.Namespace) -> int:
    from agent.platform.firewall import FirewallError, LinuxFirewall
    from agent.proxy.nftables import config_from_policy, render_ruleset
    from agent.state import AgentState
    from policy_server.protocol import PolicyBundle

    bundle = AgentState(args.state_dir).load_policy() or PolicyBundle()
    text = render_ruleset(config_from_policy(bundle, proxy_uid=_proxy_uid(args.proxy_uid)))
    print(text)
    if args.check:
        try:
            LinuxFirewall().check(text)
        except FirewallError as exc:
            print(exc, file=sys.stderr)
            return 1
        print("# nft -c: the ruleset is valid", file=sys.stderr)
    return 0


def cmd_install_ca(args: argparse.Namespace) -> int:
    from agent.proxy import ca
    from agent.state import StatePaths

    confdir = StatePaths.from_option(args.state_dir).root / "collectors" / "proxy" / "mitmproxy"
    try:
        cert, key = Path(args.cert).read_text(), Path(args.key).read_text()
        ca.write_proxy_ca(confdir, cert, key, owner_uid=_proxy_uid(None) if not args.no_proxy_user else None)
        report = ca.install_everywhere(cert)
    except (OSError, ca.CaError) as exc:
        print(f"install-ca: {exc}", file=sys.stderr)
        return 1
    print(f"school CA installed: {report.system}, {report.firefox}, {len(report.nss)} NSS databases")
    return 0


def cmd_fetch_ca(args: argparse.Namespace) -> int:
    """Fetch the school CA from the enrolled server and install it: the proxy's confdir, the system
    store, Firefox, Chromium.  The running agent's proxy collector runs this as a short-lived child
    (`agent.proxy.ca_fetch.install_school_ca_in_child`) so that `cryptography` (~8 MB) is never
    loaded into the long-running agent; with --json the last line of stdout is one JSON object
    `{"ok": true, "system": …, "firefox": …, "nss": [...]}` or `{"ok": false, "error": …}`."""
    from agent.proxy import ca
    from agent.proxy.ca_fetch import CaFetchError, fetch_school_ca
    from agent.state import StatePaths

    state_root = StatePaths.from_option(args.state_dir).root
    confdir = state_root / "collectors" / "proxy" / "mitmproxy"
    owner_uid = None if args.no_proxy_user else (args.owner_uid if args.owner_uid is not None
                                                 else _proxy_uid_if_any())
    try:
        seat = fetch_school_ca(state_root)  # this seat's CA; the browsers trust the school CA
        report = ca.install_everywhere(seat.root_pem, Path(args.root))
        ca.write_proxy_ca(confdir, seat.cert_pem, seat.key_pem, owner_uid=owner_uid,
                          root_pem=seat.root_pem, expires_at=seat.expires_at)
    except (OSError, ca.CaError, CaFetchError) as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        print(f"fetch-ca: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, "system": str(report.system), "firefox": str(report.firefox),
                          "nss": [str(db) for db in report.nss]}), flush=True)
    else:
        print(f"school CA fetched and installed: {report.system}, {report.firefox}, "
              f"{len(report.nss)} NSS databases")
    return 0


def _proxy_uid_if_any() -> int | None:
    try:
        return pwd.getpwnam("kalkan-proxy").pw_uid
    except KeyError:
        return None


def cmd_remove(args: argparse.Namespace) -> int:
    from agent.collectors.proxy import ProxyCollector
    from agent.state import StatePaths

    ProxyCollector.uninstall(StatePaths.from_option(args.state_dir).root)
    print("firewall table inet kalkan and the school CA removed")
    return 0


def register(subparsers) -> None:
    proxy = subparsers.add_parser("proxy", help="filtering proxy: firewall ruleset, school CA")
    sub = proxy.add_subparsers(dest="proxy_command", required=True)
    ruleset = sub.add_parser("ruleset", help="print the nftables ruleset made from the current policy")
    ruleset.add_argument("--proxy-uid", type=int, default=None)
    ruleset.add_argument("--check", action="store_true", help="also check it with nft -c")
    ruleset.set_defaults(func=cmd_ruleset)
    install = sub.add_parser("install-ca", help="trust the school CA (from GET /api/v1/ca) everywhere")
    install.add_argument("cert")
    install.add_argument("key")
    install.add_argument("--no-proxy-user", action="store_true", help="do not chown to kalkan-proxy")
    install.set_defaults(func=cmd_install_ca)
    fetch = sub.add_parser("fetch-ca", help="fetch the school CA from the enrolled server and trust it "
                                            "everywhere (what the running agent does by itself)")
    fetch.add_argument("--root", default="/", help="install under this root (tests, the fake platform)")
    fetch.add_argument("--owner-uid", type=int, default=None,
                       help="owner of the proxy's CA file (default: kalkan-proxy if that user exists)")
    fetch.add_argument("--no-proxy-user", action="store_true", help="do not chown the proxy's CA file")
    fetch.add_argument("--json", action="store_true", help="end with one JSON line (for the agent)")
    fetch.set_defaults(func=cmd_fetch_ca)
    remove = sub.add_parser("remove", help="remove the firewall table and the CA")
    remove.set_defaults(func=cmd_remove)
    for parser in (ruleset, install, fetch, remove):
        parser.add_argument("--state-dir", default=None)
