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
class FirewallConfig:
    proxy_uid: int
    transparent_port: int = DEFAULT_TRANSPARENT_PORT
    dns_resolvers: tuple[str, ...] = ()
    # Other uids never redirected (besides the proxy's own).  Empty by default: even root's
    # web traffic goes through the proxy, which passes system users through (addon).
    exempt_uids: tuple[int, ...] = ()
    # People (uid ≥ this) may reach only the web ports: a foreign proxy on 3128/8080, a VPN
    # over TCP and the like are refused.  None turns the rule off.
    human_uid_min: int | None = HUMAN_UID_MIN
    extra_human_ports: tuple[int, ...] = field(default=())


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
    return FirewallConfig(proxy_uid=proxy_uid, transparent_port=transparent_port, dns_resolvers=resolvers)


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


def render_ruleset(config: FirewallConfig, template: Path = TEMPLATE) -> str:
    v4, v6 = _check(config)
    if not template.is_file():
        raise RulesetError(f"nftables template {template} is missing; reinstall Kalkan (install/nftables)")
    indent = " " * 8
    if v4 or v6:
        dns = [
            f"{indent}meta l4proto {{ tcp, udp }} th dport 53 ip daddr != {{ {', '.join(v4)} }} drop "
            '  comment "DNS only to the school\'s resolvers"' if v4 else
            f"{indent}meta l4proto {{ tcp, udp }} th dport 53 meta nfproto ipv4 drop",
            f"{indent}meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr != {{ {', '.join(v6)} }} drop" if v6
            else f"{indent}meta l4proto {{ tcp, udp }} th dport 53 meta nfproto ipv6 drop",
        ]
    else:
        dns = [f"{indent}# no DNS resolver configured (network.dns_resolvers): DNS is not restricted"]
    if config.human_uid_min is not None:
        ports = ", ".join(str(p) for p in sorted({53, 80, 443, *config.extra_human_ports}))
        other = (f"{indent}meta skuid >= {config.human_uid_min} meta l4proto tcp tcp dport != {{ {ports} }} "
                 'reject with tcp reset comment "people reach only the web, through the proxy"')
    else:
        other = f"{indent}# other TCP ports of people are not restricted"
    uids = ", ".join(str(u) for u in sorted({config.proxy_uid, *config.exempt_uids}))
    return Template(template.read_text()).substitute(
        exempt_uids=uids, transparent_port=config.transparent_port,
        dns_rules="\n".join(dns), other_ports_rule=other,
    )
