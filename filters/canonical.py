"""Canonical URLs and lookup expressions, after Google Safe Browsing's rules.

Every URL the filter sees, and every entry of every list, goes through `canonicalize`
first, so that the many spellings of one address (``HTTP://School.KG.``,
``http://0x7f.1/``, ``http://school.kg@evil.example/%2e%2e/x``) compare equal.

The steps (Safe Browsing "Canonicalization", with Kalkan's additions marked *):

1. strip leading/trailing whitespace, drop every tab, CR and LF; cut the fragment;
2. no scheme → ``http://``; the scheme is lower-cased;
3. the host is what follows ``scheme://`` up to ``/ \\ ?``, minus userinfo (up to the
   last ``@``) and port; the path runs to ``?``; the query is kept;
4. host, path and query are percent-unescaped repeatedly until nothing changes;
5. host: consecutive dots collapse, leading/trailing dots go, lower-case; IPv4 in
   decimal, octal, hex or short forms becomes dotted decimal; IPv6 is compressed*;
   an internationalised name becomes punycode*; any character that cannot be in a
   host name is percent-escaped*;
6. path: ``\\`` becomes ``/``*, ``.`` and ``..`` segments resolve, ``//`` collapses;
7. bytes <= 0x20, >= 0x7f, ``#`` and ``%`` are percent-escaped with upper-case hex
   (and ``?`` in the path*, so that the result parses back the same way).

The port is dropped: the filter decides on host and path only.  The function never
raises and is idempotent: ``canonicalize(canonicalize(u)) == canonicalize(u)`` (both
are checked by property tests).
"""

from __future__ import annotations

import ipaddress
import re
from encodings import idna as _idna
from functools import lru_cache

__all__ = [
    "canonicalize",
    "canonical_host",
    "split_canonical",
    "lookup_expressions",
    "host_suffixes",
    "parent_domains",
    "path_prefixes",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNICODE_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_HOST_OK = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.-_")
# The fast path: an ordinary http(s) URL needs none of the repairs above.
# A port is allowed and dropped, as the slow path drops it (transparent-proxy URLs carry one).
_PLAIN = re.compile(r"^(https?)://([a-z0-9\-]+(?:\.[a-z0-9\-]+)+)(?::[0-9]{1,5})?(/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)?"
                    r"(\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*)?$")


def _unescape_fully(data: bytes) -> bytes:
    """Percent-unescape until stable (``%2541`` → ``%41`` → ``A``)."""
    while b"%" in data:
        new = _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), data)
        if new == data:
            break
        data = new
    return data


def _escape(data: bytes, extra: bytes = b"") -> str:
    out = []
    for byte in data:
        if byte <= 0x20 or byte >= 0x7F or byte in b"#%" or byte in extra:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _parse_ipv4_part(part: str) -> int | None:
    if not part:
        return None
    try:
        if part[:2] in ("0x", "0X"):
            return int(part[2:], 16) if len(part) > 2 else 0
        if len(part) > 1 and part[0] == "0":
            return int(part, 8)
        return int(part, 10)
    except ValueError:
        return None


def _ipv4(host: str) -> str | None:
    """Dotted decimal for any IPv4 spelling Safe Browsing and browsers accept, else None."""
    parts = host.split(".")
    if len(parts) > 4 or not host or not (host[0].isdigit()):
        return None
    numbers = [_parse_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))


def _clean_dots(host: str) -> str:
    return ".".join(label for label in host.split(".") if label)


def _label_to_ascii(label: str) -> str:
    if label.isascii():
        return _escape_host_bytes(label.lower().encode())
    try:
        return _escape_host_bytes(_idna.ToASCII(label).decode("ascii").lower().encode())
    except (UnicodeError, ValueError):
        return _escape_host_bytes(label.encode("utf-8", "surrogateescape"))


def _escape_host_bytes(data: bytes) -> str:
    return "".join(chr(b) if b in _HOST_OK else f"%{b:02X}" for b in data)


def canonical_host(raw: str | bytes) -> str:
    """The canonical form of a host name alone (no userinfo, no port expected).

    One pass is not always a fixed point: punycode moves non-ASCII characters to the end
    of a label, which can join a stray '%' with hex digits into a new escape (``%¡00`` →
    ``xn--%00-2da``).  Passes repeat until the host stops changing, so canonicalisation
    stays idempotent (a property test guards this)."""
    host = _canonical_host_once(raw)
    for _ in range(4):
        again = _canonical_host_once(host)
        if again == host:
            break
        host = again
    return host


def _canonical_host_once(raw: str | bytes) -> str:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    data = _unescape_fully(data)
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("[") and text.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
        except ValueError:
            pass
    text = _clean_dots(text.translate(_UNICODE_DOTS))
    ip = _ipv4(text)
    if ip is not None:
        return ip
    host = _clean_dots(".".join(_label_to_ascii(label) for label in text.split(".")))
    ip = _ipv4(host)
    return ip if ip is not None else host


def _resolve_path(path: bytes) -> bytes:
    path = path.replace(b"\\", b"/")
    segments = path.split(b"/")
    out: list[bytes] = []
    for seg in segments:
        if seg in (b"", b"."):
            continue
        if seg == b"..":
            if out:
                out.pop()
            continue
        out.append(seg)
    trailing = path.endswith(b"/") or segments[-1] in (b".", b"..")
    if not out:
        return b"/"
    return b"/" + b"/".join(out) + (b"/" if trailing else b"")


def _strip_port(authority: str) -> str:
    if authority.startswith("["):
        end = authority.find("]")
        if end != -1:
            return authority[: end + 1]
        return authority
    colon = authority.rfind(":")
    if colon != -1 and authority[colon + 1:].isdigit() or authority.endswith(":"):
        return authority[:colon]
    return authority


@lru_cache(maxsize=4096)
def _canonical_plain_host(host: str) -> str:
    ip = _ipv4(host)
    return ip if ip is not None else host


def canonicalize(url: str) -> str:
    """The canonical form of `url` (see the module docstring).  Never raises."""
    if not isinstance(url, str):
        url = str(url)
    plain = _PLAIN.match(url)
    if plain and "%" not in url and "/." not in url and "//" not in url[len(plain.group(1)) + 3:]:
        scheme, host, path, query = plain.groups()
        host = _canonical_plain_host(host)
        return f"{scheme}://{host}{path or '/'}{query or ''}"
    return _canonicalize_slow(url)


def _canonicalize_slow(url: str) -> str:
    text = url.strip(" \t\r\n\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14"
                     "\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f")
    text = text.replace("\t", "").replace("\r", "").replace("\n", "")
    text = text.split("#", 1)[0]
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        rest = text[match.end():]
    else:
        scheme = "http"
        rest = text[2:] if text.startswith("//") else text
    cut = len(rest)
    for sep in "/\\?":
        pos = rest.find(sep)
        if pos != -1 and pos < cut:
            cut = pos
    authority, remainder = rest[:cut], rest[cut:]
    authority = authority.rsplit("@", 1)[-1]
    host = canonical_host(_strip_port(authority))
    if "?" in remainder:
        raw_path, raw_query = remainder.split("?", 1)
        has_query = True
    else:
        raw_path, raw_query, has_query = remainder, "", False
    path = _resolve_path(_unescape_fully(raw_path.encode("utf-8", "surrogatepass")))
    out = f"{scheme}://{host}{_escape(path, b'?')}"
    if has_query:
        out += "?" + _escape(_unescape_fully(raw_query.encode("utf-8", "surrogatepass")))
    return out


def split_canonical(canonical_url: str) -> tuple[str, str, str | None]:
    """(host, path, query or None) of a canonical URL."""
    rest = canonical_url.split("://", 1)[-1]
    slash = rest.find("/")
    if slash == -1:
        return rest, "/", None
    host, path = rest[:slash], rest[slash:]
    if "?" in path:
        path, query = path.split("?", 1)
        return host, path, query
    return host, path, None


def _is_ip(host: str) -> bool:
    return host.startswith("[") or _ipv4(host) == host


def parent_domains(host: str) -> list[str]:
    """The host and all its parent domains (``a.b.kg``, ``b.kg``, ``kg``); an IP alone."""
    if host[:1].isdigit() and host.replace(".", "").isdigit() or host.startswith("["):
        return [host]
    out = [host]
    pos = host.find(".")
    while pos != -1:
        out.append(host[pos + 1:])
        pos = host.find(".", pos + 1)
    return out


def host_suffixes(host: str, *, limit: int | None = 5) -> list[str]:
    """The host and its parent domains, longest first.

    With ``limit=5`` (Safe Browsing): the exact host plus up to four suffixes taken from
    the last five labels, never the top-level label alone.  With ``limit=None`` every
    parent domain is included (squidGuard's domain-list semantics).  IPs: only the host.
    """
    if _is_ip(host):
        return [host]
    labels = host.split(".")
    out = [host]
    start = max(1, len(labels) - limit) if limit else 1
    for i in range(start, len(labels) - 1):
        suffix = ".".join(labels[i:])
        if suffix != host:
            out.append(suffix)
    return out


def path_prefixes(path: str, query: str | None, *, limit: int | None = 4) -> list[str]:
    """Safe Browsing path expressions: the exact path with and without the query, then
    up to `limit` prefixes from the root, each ending in ``/``."""
    out = []
    if query is not None:
        out.append(f"{path}?{query}")
    out.append(path)
    segments = path.split("/")[1:-1]  # directories only
    prefix = "/"
    prefixes = [prefix]
    for seg in segments:
        prefix += seg + "/"
        prefixes.append(prefix)
    if limit:
        prefixes = prefixes[:limit]
    for p in prefixes:
        if p not in out:
            out.append(p)
    return out


def lookup_expressions(canonical_url: str) -> list[str]:
    """The host-suffix × path-prefix expressions Safe Browsing looks up (at most 30),
    as ``host/path`` strings without scheme, most specific first."""
    host, path, query = split_canonical(canonical_url)
    paths = path_prefixes(path, query)
    return [h + p for h in host_suffixes(host) for p in paths]


MAX_QUERY_PARAMS = 10  # a request's parameters tried as subsets against list entries with a query
MAX_SUBSET = 3  # an entry's query may name this many parameters and still match more


def entry_path(path: str, query: str | None) -> str:
    """The form a list entry's path is kept and compared in: letter case folded (squidGuard's
    semantics; many servers ignore case, so `/Games/` must not get past an entry for `/games/`)
    and the query's parameters sorted (an entry names parameters, not their order)."""
    folded = path.lower()
    if query is None:
        return folded
    return f"{folded}?{'&'.join(sorted(p for p in query.lower().split('&') if p))}"


def query_subsets(query: str) -> list[str]:
    """The sorted parameter subsets of a request's query that a list entry could be: the whole
    query, then every subset of up to `MAX_SUBSET` parameters (of the first `MAX_QUERY_PARAMS`
    distinct ones), so ``forumdisplay.php?f=17`` matches ``forumdisplay.php?s=x&f=17``."""
    from itertools import combinations

    params = sorted(dict.fromkeys(p for p in query.lower().split("&") if p))
    out = ["&".join(params)]
    head = params[:MAX_QUERY_PARAMS]
    for size in range(1, min(MAX_SUBSET, len(head)) + 1):
        for combo in combinations(head, size):
            text = "&".join(combo)
            if text != out[0]:
                out.append(text)
    return out
