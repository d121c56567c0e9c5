""""Try a URL": what each group gets for it now, and which rule decides.

The same decision code the proxy runs (`filters.decision.decide`), on the policy in force and
the published category index (with the school's own site categories on top, as on the seats).
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from policy_server.db.models import utcnow
from policy_server.errors import InvalidInput
from policy_server.policies.service import current_bundle

_INDEXES: dict[str, Any] = {}
_LOCK = threading.Lock()


def _index(state_dir: Path, sha: str | None):
    from filters.index import CategoryIndex, IndexError_
    from policy_server.filtering.lists import artifact_path

    if not sha:
        return None
    with _LOCK:
        if sha not in _INDEXES:
            try:
                _INDEXES.clear()  # one index at a time: the one in force
                _INDEXES[sha] = CategoryIndex.open(artifact_path(state_dir, sha))
            except IndexError_:
                return None
        return _INDEXES[sha]


def try_url(db: Session, *, state_dir: Path, url: str, at: datetime | None = None, room: str | None = None,
            language: str = "en") -> list[dict[str, Any]]:
    from filters.categories import names
    from filters.decision import decide
    from filters.index import CategoryIndex, build_overlay_from_lists
    from filters.messages import explain
    from filters.policy import FilterPolicy

    url = (url or "").strip()
    if not url or any(c.isspace() for c in url):
        raise InvalidInput("write one address, e.g. example.kg or https://example.kg/page")
    raw = current_bundle(db).model_dump(mode="json")
    policy = FilterPolicy.from_bundle(raw)
    index = _index(state_dir, policy.index_sha256)
    if policy.site_categories:
        overlay = build_overlay_from_lists(policy.site_categories)
        index = index.with_overlay(overlay) if index is not None else CategoryIndex.empty(overlay)
    at = at or utcnow()
    out = []
    for group in policy.groups:
        verdict = decide(policy, index, url=url, group=group, at=at, room=room)
        out.append({
            "group": group, "kind": policy.kind_of(group), "action": verdict.action, "rule": verdict.rule,
            "categories": list(verdict.categories),
            "category_names": names(list(verdict.categories), language) if verdict.categories else [],
            "clauses": list(verdict.clauses), "matched": list(verdict.matched),
            "explanation": explain(verdict, language), "url": verdict.url,
            "intercept_tls": verdict.intercept_tls,
        })
    return out
