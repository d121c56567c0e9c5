"""The proxy's view of the filter: one object per loaded policy bundle.

All decisions are made by `filters/` (canonical URLs, the category index, the
decision function, SafeSearch rules, phrase scores, download kinds); this module
only adapts their API to what the addon asks, and knows the two things that are
the proxy's own: which hosts are ISUO (never intercepted) and which OS group a
user belongs to.  A new bundle builds a new Engine; the addon swaps the reference,
so a request sees either the old or the new policy, never a mix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_server.protocol import PolicyBundle

PASSTHROUGH, INTERCEPT, BLOCK = "passthrough", "intercept", "block"


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


def _host_matches(host: str, patterns: list[str] | tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().strip().rstrip(".")
        if pattern and (host == pattern or host.endswith("." + pattern)):
            return True
    return False


_INDEX_CACHE: dict[str, Any] = {}
_INDEX_LOCK = threading.Lock()


def load_index(source: str | None) -> Any:
    """The category index, built once per source and shared by every policy version."""
    if not source:
        return None
    with _INDEX_LOCK:
        if source not in _INDEX_CACHE:
            from filters.index import CategoryIndex

            path = Path(source)
            if path.is_dir():
                _INDEX_CACHE[source] = CategoryIndex.from_ut1(path)
            else:
                _INDEX_CACHE[source] = CategoryIndex.load(path)
        return _INDEX_CACHE[source]


class Engine:
    def __init__(self, bundle: PolicyBundle, filter_policy: Any = None, index: Any = None) -> None:
        self.bundle = bundle
        self.version = bundle.version
        self.isuo_hosts = tuple(bundle.isuo.hosts)
        self.alert_threshold = bundle.filtering.alert_threshold
        self.safe_search_on = bundle.filtering.safe_search
        self._policy = filter_policy
        self._index = index
        self._group_cache: dict[tuple[str | None, tuple[str, ...]], str] = {}

    @classmethod
    def empty(cls) -> Engine:
        """Before any policy arrives: the protocol's defaults (students get nothing)."""
        return cls.from_bundle(PolicyBundle().model_dump(mode="json"))

    @classmethod
    def from_bundle(cls, raw: dict[str, Any], *, index: str | None = None) -> Engine:
        bundle = PolicyBundle.model_validate(raw)
        from filters.policy import FilterPolicy

        return cls(bundle, FilterPolicy.from_bundle(raw), load_index(index))

    # --- the proxy's own knowledge

    def is_isuo(self, host: str) -> bool:
        return _host_matches(host, self.isuo_hosts)

    def group_of(self, user: str | None, groups: tuple[str, ...]) -> str:
        key = (user, groups)
        found = self._group_cache.get(key)
        if found is None:
            found = self._group_cache[key] = self.bundle.group_of(user, list(groups))
        return found

    # --- delegated to filters/

    def host_action(self, host: str, *, group: str, user: str | None, seat: str | None, when: float) -> str:
        from filters.decision import decide_host

        verdict = decide_host(self._policy, self._index, host, group=group, user=user, seat=seat, when=when)
        return str(getattr(verdict, "action", verdict))

    def decide(self, url: str, *, group: str, user: str | None, seat: str | None, when: float) -> Verdict:
        from filters.decision import decide

        verdict = decide(self._policy, self._index, url, group=group, user=user, seat=seat, when=when)
        if verdict.allowed:
            return ALLOW
        return Verdict(allowed=False, categories=tuple(verdict.categories), rule=verdict.rule,
                       clauses=tuple(verdict.clauses), detail=getattr(verdict, "detail", ""))

    def safe_search(self, url: str) -> SearchRewrite | None:
        from filters import search

        found = search.rewrite(url)
        if found is None:
            return None
        return SearchRewrite(url=found.url, engine=found.engine, query=found.query or "",
                             headers=dict(getattr(found, "headers", {}) or {}))

    def score(self, text: str) -> Score | None:
        from filters import phrases

        result = phrases.score(text)
        return Score(score=result.score, lists=tuple(result.lists), phrases=tuple(result.phrases))

    def download(self, url: str, *, group: str, content_type: str, disposition: str) -> Verdict | None:
        from filters import downloads

        verdict = downloads.check(self._policy, url, group=group, content_type=content_type,
                                  disposition=disposition)
        if verdict is None or verdict.allowed:
            return None
        return Verdict(allowed=False, categories=tuple(verdict.categories), rule="download",
                       clauses=tuple(verdict.clauses))
