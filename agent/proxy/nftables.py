"""The no-bypass nftables ruleset, generated from the policy (pure; no nft here).

The template is `install/nftables/kalkan.nft.tmpl`; `agent.platform.firewall`
checks (`nft -c -f`) and installs what `render_ruleset` returns.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from policy_server.protocol import PolicyBundle

TEMPLATE = Path(__file__).resolve().parents[2] / "install" / "nftables" / "kalkan.nft.tmpl"
TABLE = "kalkan"
DEFAULT_TRANSPARENT_PORT = 3129
HUMAN_UID_MIN = 1000


class RulesetError(ValueError):
    pass


@dataclass(frozen=True)
class Extra:
    """One thing a group's programs may reach directly (the policy's `network.group_out`)."""

    proto: str  # tcp | udp | sctp | udplite
    ports: str  # "22" or "8000-8100"
    dest: str | None = None  # an address or network, None: anywhere
    uids: tuple[int, ...] = ()
    gids: tuple[int, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class FirewallConfig:
    proxy_uid: int
    transparent_port: int = DEFAULT_TRANSPARENT_PORT
    dns_resolvers: tuple[str, ...] = ()
    # Other uids never redirected nor restricted (besides the proxy's own, which is restricted to
    # `proxy_ports`).  Empty by default: even root's web traffic goes through the proxy, which
    # passes system users through (addon).
    exempt_uids: tuple[int, ...] = ()
    # People (uid ≥ this) reach only the proxy, DNS, DHCP and their group's extras (default
    # deny, every protocol, IPv4 and IPv6).  None turns the restriction off.
    human_uid_min: int | None = HUMAN_UID_MIN
    proxy_ports: tuple[int, ...] = (80, 443)
    extras: tuple[Extra, ...] = field(default=())


_PROTOS = ("tcp", "udp", "sctp", "udplite")


def parse_extra(text: str, *, uids: tuple[int, ...] = (), gids: tuple[int, ...] = ()) -> Extra:
    """``tcp/22``, ``udp/1194@10.0.0.0/24``, ``tcp/8000-8100@fd00::5`` → `Extra`."""
    raw = text.strip().lower()
    proto, _, rest = raw.partition("/")
    ports, _, dest = rest.partition("@")
    problem = None
    if proto not in _PROTOS:
        problem = f"protocol {proto!r} is not one of {', '.join(_PROTOS)}"
    else:
        try:
            bounds = [int(p) for p in ports.split("-")]
            if not 1 <= len(bounds) <= 2 or not all(1 <= b <= 65535 for b in bounds) \
                    or bounds != sorted(bounds):
                raise ValueError
        except ValueError:
            problem = f"{ports!r} is not a port (1–65535) or a range like 8000-8100"
    if dest and problem is None:
        try:
            dest = str(ipaddress.ip_network(dest, strict=False))
        except ValueError:
            problem = f"{dest!r} is not an IP address or network"
    if problem:
        raise RulesetError(f"network.group_out entry {text!r}: {problem}; write it like tcp/22 or "
                           "udp/1194@10.0.0.0/24")
    return Extra(proto=proto, ports=ports, dest=dest or None, uids=uids, gids=gids, text=text)


def _group_members(group) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """uids of a policy group's OS users and of its OS groups' members, and those groups' gids."""
    import grp
    import pwd

    uids, gids = set(), set()
    for name in group.os_users:
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            continue
    for name in group.os_groups:
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            continue
        gids.add(entry.gr_gid)
        for member in entry.gr_mem:
            try:
                uids.add(pwd.getpwnam(member).pw_uid)
            except KeyError:
                continue
    return tuple(sorted(uids)), tuple(sorted(gids))


def system_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """Non-loopback nameservers of resolv.conf (loopback stubs need no rule)."""
    found = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return ()
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            if not addr.is_loopback:
                found.append(str(addr))
    return tuple(found)


def config_from_policy(bundle: PolicyBundle, *, proxy_uid: int,
                       transparent_port: int = DEFAULT_TRANSPARENT_PORT,
                       resolv_conf: Path = Path("/etc/resolv.conf")) -> FirewallConfig:
    resolvers = tuple(bundle.network.dns_resolvers) or system_resolvers(resolv_conf)
    extras = []
    groups = {g.name: g for g in bundle.groups}
    for name, entries in sorted(bundle.network.group_out.items()):
        group = groups.get(name)
        if group is None:
            raise RulesetError(f"network.group_out names the group {name!r}, which the policy does not "
                               "define; add it to groups or remove the entry")
        uids, gids = _group_members(group)
        extras += [parse_extra(entry, uids=uids, gids=gids) for entry in entries]
    return FirewallConfig(proxy_uid=proxy_uid, transparent_port=transparent_port, dns_resolvers=resolvers,
                          proxy_ports=tuple(bundle.network.proxy_ports) or (80, 443), extras=tuple(extras))


def _check(config: FirewallConfig) -> tuple[list[str], list[str]]:
    if not 0 <= config.proxy_uid < 2**32:
        raise RulesetError(f"proxy uid {config.proxy_uid} is not a valid uid")
    if not 1 <= config.transparent_port <= 65535:
        raise RulesetError(f"transparent port {config.transparent_port} is not a TCP port (1–65535)")
    v4, v6 = [], []
    for resolver in config.dns_resolvers:
        try:
            addr = ipaddress.ip_address(resolver)
        except ValueError:
            raise RulesetError(
                f"DNS resolver {resolver!r} is not an IP address; fix network.dns_resolvers in the policy"
            ) from None
        (v4 if addr.version == 4 else v6).append(str(addr))
    return v4, v6


def _extra_rules(config: FirewallConfig, indent: str) -> list[str]:
    lines = []
    for extra in config.extras:
        ports = extra.ports
        dest = ""
        if extra.dest:
            dest = f"ip daddr {extra.dest} " if ipaddress.ip_network(extra.dest).version == 4 \
                else f"ip6 daddr {extra.dest} "
        comment = f'comment "group_out {extra.text}"'
        rule = f"meta l4proto {extra.proto} {dest}th dport {ports} accept {comment}"
        if extra.uids:
            lines.append(f"{indent}meta skuid {{ {', '.join(map(str, extra.uids))} }} {rule}")
        if extra.gids:
            lines.append(f"{indent}meta skgid {{ {', '.join(map(str, extra.gids))} }} {rule}")
    return lines or [f"{indent}# no group extras (network.group_out)"]


def render_ruleset(config: FirewallConfig, template: Path = TEMPLATE) -> str:
    v4, v6 = _check(config)
    if not template.is_file():
        raise RulesetError(f"nftables template {template} is missing; reinstall Kalkan (install/nftables)")
    for port in config.proxy_ports:
        if not 1 <= port <= 65535:
            raise RulesetError(f"proxy port {port} is not a TCP port (1–65535); fix network.proxy_ports")
    indent = " " * 8
    if v4 or v6:
        dns = [
            f"{indent}meta l4proto {{ tcp, udp }} th dport 53 ip daddr != {{ {', '.join(v4)} }} drop "
            '  comment "DNS only to the school\'s resolvers"' if v4 else
            f"{indent}meta l4proto {{ tcp, udp }} th dport 53 meta nfproto ipv4 drop",
            f"{indent}meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr != {{ {', '.join(v6)} }} drop" if v6
            else f"{indent}meta l4proto {{ tcp, udp }} th dport 53 meta nfproto ipv6 drop",
        ]
        dns_accept = []
        if v4:
            dns_accept.append(f"{indent}meta l4proto {{ tcp, udp }} th dport 53 "
                              f"ip daddr {{ {', '.join(v4)} }} "
                              'accept comment "the school\'s resolvers"')
        if v6:
            dns_accept.append(f"{indent}meta l4proto {{ tcp, udp }} th dport 53 "
                              f"ip6 daddr {{ {', '.join(v6)} }} "
                              "accept")
    else:
        dns = [f"{indent}# no DNS resolver configured (network.dns_resolvers): DNS is not restricted"]
        dns_accept = [f"{indent}meta l4proto {{ tcp, udp }} th dport 53 accept "
                      'comment "no resolver configured: DNS is not restricted"']
    if config.human_uid_min is not None:
        people = f"{indent}meta skuid >= {config.human_uid_min} jump person_out"
    else:
        people = f"{indent}# people are not restricted (human_uid_min is off)"
    others = sorted(set(config.exempt_uids) - {config.proxy_uid})
    other_exempt = (f"{indent}meta skuid {{ {', '.join(map(str, others))} }} accept" if others
                    else f"{indent}# no other exempt uid")
    uids = ", ".join(str(u) for u in sorted({config.proxy_uid, *config.exempt_uids}))
    return Template(template.read_text()).substitute(
        exempt_uids=uids, transparent_port=config.transparent_port, proxy_uid=config.proxy_uid,
        dns_rules="\n".join(dns), dns_accept="\n".join(dns_accept), people_jump=people,
        other_exempt=other_exempt, human_uid_min=config.human_uid_min or HUMAN_UID_MIN,
        proxy_ports=", ".join(str(p) for p in sorted(set(config.proxy_ports))),
        extras="\n".join(_extra_rules(config, indent)),
    )
