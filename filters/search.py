"""Search engines: which hosts are engines, the query in a search URL, and the request
changes that force SafeSearch / restricted mode.

The proxy intercepts the engines' hosts (see `decision.decide_host`), calls
`safe_search(url)` on every request and applies the returned URL and headers, and
scores `extract_query(url).text` with `filters.phrases`.

What each engine gets (parameters replace any value the user set):

=========== ============================ ==================================================
engine      hosts                        SafeSearch
=========== ============================ ==================================================
google      google.<tld>, www.google.…   ``safe=active``
yandex      yandex.<tld>, ya.ru          ``family=yes`` (family search)
bing        bing.com                     ``adlt=strict``
duckduckgo  duckduckgo.com (+html/lite)  ``kp=1`` (strict)
youtube     youtube.com, m.youtube.com   header ``YouTube-Restrict: Strict``
mailru      go.mail.ru                   none known as a URL parameter: the query is still
                                         extracted and scored; block the engine for a group
                                         (``filtering.group_block_list``) if that is not enough
=========== ============================ ==================================================

The engines' DNS-level switches (``forcesafesearch.google.com``, ``strict.bing.com``,
``restrict.youtube.com``, ``familysearch.yandex.ru``) are listed in `DNS_SAFE_HOSTS` for
an operator who prefers to enforce at the resolver as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_ENGINE_HOSTS: list[tuple[str, re.Pattern]] = [
    ("google", re.compile(r"^(www\.)?google\.(com?\.)?[a-z]{2,3}$")),
    ("yandex", re.compile(r"^(www\.)?(yandex\.(ru|kg|kz|by|uz|com|com\.tr)|ya\.ru)$")),
    ("bing", re.compile(r"^(www\.|cn\.)?bing\.com$")),
    ("duckduckgo", re.compile(r"^(www\.|html\.|lite\.)?duckduckgo\.com$")),
    ("youtube", re.compile(r"^(www\.|m\.|music\.)?youtube\.com$|^www\.youtube-nocookie\.com$"
                           r"|^youtubei\.googleapis\.com$")),
    ("mailru", re.compile(r"^go\.mail\.ru$")),
]

# engine → (paths that are searches (prefixes), query parameter)
_SEARCH_PATHS: dict[str, tuple[tuple[str, ...], str]] = {
    "google": (("/search", "/complete/search", "/webhp", "/images"), "q"),
    "yandex": (("/search", "/images/search", "/video/search", "/suggest"), "text"),
    "bing": (("/search", "/images/search", "/videos/search", "/AS/Suggestions"), "q"),
    "duckduckgo": (("/", "/html", "/lite", "/ac"), "q"),
    "youtube": (("/results", "/search"), "search_query"),
    "mailru": (("/search", "/msearch"), "q"),
}

# engine → parameters forced on every request to its search paths
SAFE_PARAMS: dict[str, dict[str, str]] = {
    "google": {"safe": "active"},
    "yandex": {"family": "yes"},
    "bing": {"adlt": "strict"},
    "duckduckgo": {"kp": "1"},
}
# engine → headers forced on every request to the engine
SAFE_HEADERS: dict[str, dict[str, str]] = {
    "youtube": {"YouTube-Restrict": "Strict"},
}
DNS_SAFE_HOSTS = {
    "google": "forcesafesearch.google.com",
    "bing": "strict.bing.com",
    "youtube": "restrict.youtube.com",
    "yandex": "familysearch.yandex.ru",
}
ENGINES = tuple(name for name, _ in _ENGINE_HOSTS)


def engine_for_host(host: str) -> str | None:
    """The engine id of a host (``www.google.kg`` → ``google``), else None."""
    host = host.lower().rstrip(".")
    for name, pattern in _ENGINE_HOSTS:
        if pattern.match(host):
            return name
    return None


@dataclass(frozen=True)
class SearchQuery:
    engine: str
    text: str  # the query as the user typed it (decoded)
    kind: str = "web"  # web | images | video | suggest


def _kind(path: str) -> str:
    if "image" in path:
        return "images"
    if "video" in path or path.startswith("/results"):
        return "video"
    if "suggest" in path.lower() or path.startswith(("/complete", "/ac")):
        return "suggest"
    return "web"


def _is_search_path(engine: str, path: str) -> bool:
    paths = _SEARCH_PATHS[engine][0]
    return any(path == p or path.startswith(p.rstrip("/") + "/") or (p == "/" and path == "/")
               for p in paths)


def extract_query(url: str) -> SearchQuery | None:
    """The search query of a search-engine URL, or None (not an engine, not a search,
    or an empty query).  Give the URL as the browser sent it (not canonicalised, so
    that an escaped ``&`` inside the query stays part of it)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    engine = engine_for_host(parts.hostname or "")
    if engine is None:
        return None
    path = parts.path or "/"
    if not _is_search_path(engine, path):
        return None
    name = _SEARCH_PATHS[engine][1]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == name and value.strip():
            return SearchQuery(engine, value.strip(), _kind(path))
    return None


@dataclass(frozen=True)
class SafeSearch:
    """What the proxy must change on one request."""

    engine: str | None
    url: str  # the URL to send upstream (== the input when nothing changes)
    headers: dict[str, str] = field(default_factory=dict)  # headers to set (replace)
    changed: bool = False


def safe_search(url: str) -> SafeSearch:
    """The SafeSearch changes for one request URL (see the module docstring)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return SafeSearch(None, url)
    engine = engine_for_host(parts.hostname or "")
    if engine is None:
        return SafeSearch(None, url)
    headers = dict(SAFE_HEADERS.get(engine, {}))
    forced = SAFE_PARAMS.get(engine)
    if not forced or not _is_search_path(engine, parts.path or "/"):
        return SafeSearch(engine, url, headers, bool(headers))
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k not in forced]
    new_pairs = kept + list(forced.items())
    if new_pairs == pairs:
        return SafeSearch(engine, url, headers, bool(headers))
    new_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(new_pairs), parts.fragment))
    return SafeSearch(engine, new_url, headers, True)
