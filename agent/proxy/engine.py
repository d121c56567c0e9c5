"""The proxy's view of the filter: one object per loaded policy bundle.

All decisions are made by `filters/` (canonical URLs, the category index, the
decision function, SafeSearch rules, phrase scores, download kinds); this module
only adapts their API to what the addon asks, and knows the two things that are
the proxy's own: which hosts are ISUO (never intercepted) and which OS group a
user belongs to.  A new bundle builds a new Engine; the addon swaps the reference,
so a request sees either the old or the new policy, never a mix.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from policy_server.protocol import PolicyBundle

PASSTHROUGH, INTERCEPT, BLOCK = "passthrough", "intercept", "block"
HOST_CACHE_BUCKET_S = 60
HOST_CACHE_MAX = 4096
PER_HOST_CACHE_MAX = 4096  # host → fact caches (ISUO, search engine): facts of the policy, not of time
URL_CACHE_MAX = 4096
# The URL fast path takes only URLs whose authority is a plain name or address with an optional
# port: then `canonicalize` finds the same host whatever the path holds (no userinfo, no
# escapes, nothing that could end the authority early), so the host alone names it.
_PLAIN_AUTHORITY = re.compile(r"[A-Za-z0-9.\-]+(?::[0-9]{1,5})?")
_NOT_PER_HOST = ""  # in the authority cache: this authority's URLs are decided one by one
# A minute bucket is used only this far from its edges: `datetime.fromtimestamp` rounds to the
# microsecond, so an instant a hair before a whole minute can become that minute.
_EDGE_S = 0.001
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    categories: tuple[str, ...] = ()
    rule: str = ""
    clauses: tuple[str, ...] = ()
    detail: str = ""


ALLOW = Verdict(allowed=True)


@dataclass(frozen=True)
class SearchRewrite:
    url: str
    engine: str = ""
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Score:
    score: int
    lists: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()


def category_name(category_id: str, lang: str) -> str:
    try:
        from filters import categories
    except ImportError:
        return category_id
    return categories.names([category_id], lang)[0]


_INDEX_CACHE: dict[str, Any] = {}
_INDEX_LOCK = threading.Lock()


def load_index(source: str | None) -> Any:
    """The compiled category index (`kalkan-filter compile`), opened once per file and shared
    by every policy version."""
    if not source:
        return None
    with _INDEX_LOCK:
        if source not in _INDEX_CACHE:
            from filters.index import CategoryIndex

            if not Path(source).is_file():
                raise FileNotFoundError(f"category index {source} not found; compile it with "
                                        "`kalkan-filter compile` or fix kalkan_index")
            while len(_INDEX_CACHE) >= 2:  # the index in force and the one before (content-addressed files)
                _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
            _INDEX_CACHE[source] = CategoryIndex.open(source)
        return _INDEX_CACHE[source]


class Engine:
    def __init__(self, bundle: PolicyBundle, filter_policy: Any, index: Any = None) -> None:
        self.bundle = bundle
        self.version = bundle.version
        self.alert_threshold = bundle.filtering.alert_threshold
        self.safe_search_on = bundle.filtering.safe_search
        self.proxy_ports = frozenset(bundle.network.proxy_ports or (80, 443))
        self.policy = filter_policy
        self.index = index
        self._group_cache: dict[tuple[str | None, tuple[str, ...]], str] = {}
        self._host_cache: dict[tuple, Any] = {}
        # Per-request facts that depend only on the host (or group) and this policy version:
        # asked on every request, so remembered instead of recomputed (never per URL).
        self._isuo_cache: dict[str, bool] = {}
        self._search_engine_cache: dict[str, bool] = {}
        self._download_kinds_cache: dict[str, tuple[str, ...]] = {}
        self._host_facts_cache: dict[str, tuple[bool, bool]] = {}
        # The per-request fast path (see `decide`): authority → canonical host when every URL of
        # that host gets the host's verdict (else _NOT_PER_HOST), and the verdicts of such hosts
        # per (host, group, user, seat, room, minute).
        self._authority_cache: dict[str, str] = {}
        self._url_cache: dict[tuple, Verdict] = {}
        self._unsafe_minutes = _minutes_with_boundaries(filter_policy)
        # bound once: a function-level import on every request costs a lookup in sys.modules
        from filters.canonical import canonicalize, split_canonical
        from filters.decision import decide_canonical, host_has_path_rules

        self._canonicalize, self._decide_canonical = canonicalize, decide_canonical
        self._split_canonical, self._host_has_path_rules = split_canonical, host_has_path_rules

    @classmethod
    def empty(cls) -> Engine:
        """Before any policy arrives: the protocol's defaults (students get nothing)."""
        return cls.from_bundle(PolicyBundle().model_dump(mode="json"))

    @classmethod
    def from_bundle(cls, raw: dict[str, Any], *, index: str | None = None) -> Engine:
        from filters.index import index_for_policy
        from filters.policy import FilterPolicy

        bundle = PolicyBundle.model_validate(raw)
        policy = FilterPolicy.from_bundle(raw)
        # the school's own categorisation on top of the lists: the same call as `kalkan-filter check`
        return cls(bundle, policy, index_for_policy(load_index(index), policy.site_categories))

    # --- the proxy's own knowledge

    def is_isuo(self, host: str) -> bool:
        found = self._isuo_cache.get(host)
        if found is None:
            found = bool(self.policy.isuo_hosts.host_listed(host.lower().rstrip(".")))
            _remember(self._isuo_cache, host, found)
        return found

    def host_facts(self, host: str) -> tuple[bool, bool]:
        """(is it ISUO, is it a search or video engine) for a host, both asked on every request:
        one lookup in one small cache instead of two."""
        found = self._host_facts_cache.get(host)
        if found is None:
            from filters.search import engine_for_host

            found = (self.is_isuo(host), engine_for_host(host) is not None)
            _remember(self._host_facts_cache, host, found)
        return found

    def group_of(self, user: str | None, groups: tuple[str, ...]) -> str:
        key = (user, groups)
        found = self._group_cache.get(key)
        if found is None:
            found = self._group_cache[key] = self.policy.group_of(user, groups)
        return found

    # --- delegated to filters/

    def host_verdict(self, host: str, *, group: str, user: str | None, seat: str | None,
                     room: str | None, when: float) -> Any:
        """`filters.decision.HostVerdict`: passthrough / intercept / block (+ intercept_tls).

        Cached per (host, group, user, seat, room, minute) for this policy version: a browser
        opens many connections to the same few hosts, and the cache takes the ClientHello
        decision off the tail (a dict lookup instead of the category index and the rules).
        A new policy (a ban, a lesson) builds a new Engine, so its cache starts empty; only
        time-of-day changes inside the bundle (a lesson's scheduled start, a ban's `until`)
        are seen up to a minute late at the ClientHello — each request is still decided fresh.
        """
        key = (host, group, user, seat, room, int(when // HOST_CACHE_BUCKET_S))
        found = self._host_cache.get(key)
        if found is None:
            from filters.decision import decide_host

            if len(self._host_cache) >= HOST_CACHE_MAX:
                self._host_cache.clear()  # simpler than LRU; refills in a few connections
            found = self._host_cache[key] = decide_host(self.policy, self.index, host=host, group=group,
                                                        at=_at(when), room=room, seat=seat, os_user=user)
        return found

    def decide(self, url: str, *, group: str, user: str | None, seat: str | None, room: str | None,
               when: float) -> Verdict:
        """Allow or block one request's URL: the same answer as `decide_full`, usually sooner.

        The fast path: when no list or index entry with a path lies under the URL's host (most
        hosts), every URL of the host gets the host's verdict, which can change only with the
        subject or the time.  So the first request decides in full and the verdict is kept per
        (host, group, user, seat, room, minute); later requests in that minute cost two dict
        lookups — no canonical URL, no datetime, no lists, no objects but one key tuple.
        Minutes in which a ban ends or a lesson starts or ends (not on a whole minute) are
        always decided in full, as are instants within a millisecond of a minute's edge.
        A new policy builds a new Engine: its caches start empty.
        """
        return self.decide_for_minute(url, group=group, user=user, seat=seat, room=room, when=when)[0]

    def decide_for_minute(self, url: str, *, group: str, user: str | None, seat: str | None,
                          room: str | None, when: float) -> tuple[Verdict, int | None]:
        """`decide`, and the minute (since the epoch) for which this verdict is the one of *every*
        URL with this URL's authority for this subject — the minute `decide` keeps it for — or
        None when it is not (the path matters for the host, an unsafe minute, a minute's edge).
        The addon keeps it per connection, so a keep-alive connection's next request to the same
        authority in that minute (not within `_EDGE_S` of its edges) skips the engine."""
        host = self._authority_cache.get(_authority(url))
        if host is None:
            host = self._per_host_name(url)
        if not host:  # _NOT_PER_HOST: the path matters for this host
            return self.decide_full(url, group=group, user=user, seat=seat, room=room, when=when), None
        minute = int(when // 60)
        if not minute_reusable(when, minute) or minute in self._unsafe_minutes:
            return self.decide_full(url, group=group, user=user, seat=seat, room=room, when=when), None
        key = (host, group, user, seat, room, minute)
        found = self._url_cache.get(key)
        if found is not None:
            return found, minute
        found = self.decide_full(url, group=group, user=user, seat=seat, room=room, when=when)
        if self._minute_is_whole(minute):
            _remember(self._url_cache, key, found, URL_CACHE_MAX)
            return found, minute
        return found, None

    def decide_full(self, url: str, *, group: str, user: str | None, seat: str | None, room: str | None,
                    when: float) -> Verdict:
        """The full decision for one URL (canonical URL, every rule); `decide` without its cache."""
        # `decide_canonical`, not `decide`: `decide` also works out whether the host's TLS should
        # be intercepted, which only the ClientHello asks (`host_verdict`); per request it was
        # wasted work (three more list and index lookups).  Same allow/block answer.
        verdict = self._decide_canonical(self.policy, self.index, url=self._canonicalize(url), group=group,
                                         at=_at(when), room=room, seat=seat, os_user=user)
        if not verdict.blocked:
            return ALLOW
        return Verdict(allowed=False, categories=tuple(verdict.categories), rule=verdict.rule,
                       clauses=tuple(verdict.clauses))

    def _per_host_name(self, url: str) -> str:
        """The canonical host of `url` if its URLs are decided per host, else _NOT_PER_HOST;
        remembered per authority (the host[:port] as written in the URL)."""
        authority = _authority(url)
        host = _NOT_PER_HOST
        if _PLAIN_AUTHORITY.fullmatch(authority):
            # exactly the host `canonicalize` finds in any URL with this authority
            candidate = self._split_canonical(self._canonicalize(f"http://{authority}/"))[0]
            if not self._host_has_path_rules(self.policy, self.index, candidate):
                host = candidate
        _remember(self._authority_cache, authority, host)
        return host

    def _minute_is_whole(self, minute: int) -> bool:
        """Whether weekly bands and holidays can change only at this minute's edges: true unless
        the school's UTC offset has seconds in it (historical local mean times only)."""
        zone = self.policy.zone
        start = datetime.fromtimestamp(minute * 60, UTC)
        return all(at.astimezone(zone).utcoffset().total_seconds() % 60 == 0
                   for at in (start, start + _MINUTE))

    def safe_search(self, url: str, host: str | None = None) -> SearchRewrite | None:
        """SafeSearch changes for `url`; `host` (the URL's host, if the caller has it) lets the
        many requests to hosts that are no search engine skip parsing the URL."""
        from filters.search import engine_for_host, extract_query, safe_search

        if host is not None:
            is_engine = self._search_engine_cache.get(host)
            if is_engine is None:
                is_engine = engine_for_host(host) is not None
                _remember(self._search_engine_cache, host, is_engine)
            if not is_engine:
                return None
        forced = safe_search(url)
        if forced.engine is None:
            return None
        query = extract_query(url)
        return SearchRewrite(url=forced.url, engine=forced.engine, query=query.text if query else "",
                             headers=dict(forced.headers))

    def score(self, text: str) -> Score:
        from filters import phrases

        result = phrases.score(text)
        return Score(score=int(result.total), lists=tuple(sorted(result.lists)),
                     phrases=tuple(result.phrases))

    def may_block_downloads(self, group: str) -> bool:
        """Whether any download kind is blocked for `group` (teachers usually: none)."""
        blockable = self._download_kinds_cache.get(group)
        if blockable is None:
            from filters.downloads import blocked_kinds_for

            blockable = self._download_kinds_cache[group] = tuple(blocked_kinds_for(self.policy, group))
        return bool(blockable)

    def download(self, url: str, *, group: str, content_type: str, disposition: str) -> Verdict | None:
        """A blocked download's verdict (the kinds as its categories), else None."""
        from filters.downloads import check_download

        if not self.may_block_downloads(group):  # the group may download every kind: nothing to classify
            return None
        verdict = check_download(self.policy, group=group, url=url, content_type=content_type or None,
                                 content_disposition=disposition or None)
        if not verdict.blocked:
            return None
        return Verdict(allowed=False, categories=verdict.blocked_kinds, rule=verdict.rule,
                       clauses=tuple(verdict.clauses), detail=", ".join(verdict.blocked_kinds))


def _remember(cache: dict, key: Any, value: Any, limit: int = PER_HOST_CACHE_MAX) -> None:
    if len(cache) >= limit:
        cache.clear()  # simpler than LRU; refills from the next requests
    cache[key] = value


def _authority(url: str) -> str:
    """What follows ``http(s)://`` up to the next ``/`` ("" for any other scheme: then the
    authority check fails and the URL is decided in full)."""
    if url.startswith("http://"):
        start = 7
    elif url.startswith("https://"):
        start = 8
    else:
        return ""
    end = url.find("/", start)
    return url[start:] if end == -1 else url[start:end]


def _minutes_with_boundaries(policy: Any) -> frozenset[int]:
    """The minutes (since the epoch) inside which a ban ends or a lesson starts or ends: the
    verdict may change within them, so the fast path does not cache them.  A boundary on a
    whole minute changes the verdict at the minute's edge, which the cache's buckets respect."""
    minutes = set()
    for instant in policy.time_boundaries():
        minute, rest = divmod(instant - _EPOCH, _MINUTE)
        if rest:
            minutes.add(minute)
    return frozenset(minutes)


def minute_reusable(when: float, minute: int) -> bool:
    """Whether `when` lies inside `minute` (``int(when // 60)``) at least `_EDGE_S` from both
    edges: only there is a verdict kept for the minute used (`Engine.decide`)."""
    into = when - minute * 60
    return _EDGE_S <= into <= 60 - _EDGE_S


def _at(when: float) -> datetime:
    return datetime.fromtimestamp(when, UTC)
