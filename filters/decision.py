"""The decision: (policy, index, subject, time, URL) → allow or block, and why.

Precedence, first rule that applies wins (every verdict names it in `rule`):

====  ============================  ======  ==================================================
 #    rule                          action  when
====  ============================  ======  ==================================================
 1    ``ban``                       block   a teacher's ban covers the seat or OS user (000 §7.3)
 2    ``lesson.no_internet``        block   the room's lesson for this student group is "no internet"
 3    ``lesson.allow_list``         allow   lesson in allow-list mode and the URL is on its list
                                            (open / no-internet lessons: the sites the teacher
                                            allowed for the lesson, checked before 2)
      ``school.allow_list`` /               … or on the school's / group's allow-list
      ``group.allow_list``
      ``lesson.not_on_allow_list``  block   … otherwise (000 §7.3)
 4    ``schedule.holiday`` /        block   no lesson running, the group has a weekly schedule and
      ``schedule.outside_hours``            now is a holiday or outside its bands (001 §2.1–2.4)
 5    ``unsupervised.no_internet``  block   no lesson running and the group's unsupervised mode is
      ``unsupervised.not_on_               "no internet", or "allow-list" and the URL is not on the
      allow_list``                          school's or group's allow-list.  Student groups default
                                            to "allow-list" (001 §2.9); others to "open"
 6    ``group.allow_list`` /        allow   the URL is on the group's / the school's allow-list
      ``school.allow_list``
 7    ``group.block_list`` /        block   … on the group's / the school's block-list (001 §2.6)
      ``school.block_list``
 8    ``category``                  block   one of the URL's categories is blocked for the group
                                            (explicit policy action, else the category's default
                                            for the group's kind); block wins over allow
 8b   ``ip_literal``                block   the URL's host is an IP address that no list or
                                            category names (nothing to judge it by) and the
                                            group's `ip_literals` is "block" (the default for
                                            student groups)
 9    ``default.allow`` /           per     the group's `default_action` (allow when unset)
      ``default.block``             policy
====  ============================  ======  ==================================================

Teachers, staff and admins are not subject to lessons (2, 3) or, by default, to the
unsupervised rule (5).  An open-mode lesson lifts 4 and 5 for its students.

`decide_host` answers at the TLS ClientHello from the SNI alone: ``passthrough``,
``intercept`` or ``block`` (see its docstring).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .canonical import canonical_host, canonicalize, split_canonical
from .categories import CATEGORIES, clauses_of
from .index import NO_MATCH, CategoryIndex, Match
from .policy import FilterPolicy
from .search import engine_for_host

RULE_CLAUSES: dict[str, tuple[str, ...]] = {
    "ban": ("000 §7.3",),
    "lesson.no_internet": ("000 §7.3", "001 §2.9"),
    "lesson.allow_list": ("000 §7.3",),
    "lesson.not_on_allow_list": ("000 §7.3", "001 §2.9"),
    "schedule.holiday": ("001 §2.1",),
    "schedule.outside_hours": ("001 §2.1",),
    "unsupervised.no_internet": ("001 §2.9",),
    "unsupervised.not_on_allow_list": ("001 §2.9",),
    "school.allow_list": ("001 §2.6",),
    "group.allow_list": ("001 §2.6",),
    "seat.allow_list": ("001 §2.6", "000 §8.3"),
    "school.block_list": ("001 §2.6", "000 §8.3"),
    "group.block_list": ("001 §2.6",),
    "ip_literal": ("001 §2.11", "001 §2.13"),
    "category": ("000 §8.1", "001 §3.3"),
    "default.allow": ("001 §2.6",),
    "default.block": ("001 §2.6",),
}
RULES = tuple(RULE_CLAUSES)
# Rules that block every path of a host, so the ClientHello decision can block at once.
_WHOLE_HOST_BLOCKS = {"ban", "lesson.no_internet", "schedule.holiday", "schedule.outside_hours",
                      "unsupervised.no_internet"}
_ALLOW_LIST_ONLY_BLOCKS = {"unsupervised.not_on_allow_list", "lesson.not_on_allow_list"}


@dataclass(frozen=True)
class Verdict:
    action: Literal["allow", "block"]
    rule: str  # one of RULES: the rule that decided
    categories: tuple[str, ...] = ()  # every category the URL is in (sorted)
    clauses: tuple[str, ...] = ()  # regulation clauses the deciding rule serves
    intercept_tls: bool = False  # should the proxy look inside TLS for this host
    reason: str = ""  # message id for the block page (filters.messages)
    params: dict[str, Any] = field(default_factory=dict)  # values for the message
    url: str = ""  # the canonical URL decided
    group: str = ""
    matched: tuple[str, ...] = ()  # list entries that matched (index or policy lists)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url, "action": self.action, "rule": self.rule, "group": self.group,
            "categories": list(self.categories), "clauses": list(self.clauses),
            "intercept_tls": self.intercept_tls, "reason": self.reason, "params": self.params,
            "matched": list(self.matched),
        }


@dataclass(frozen=True)
class HostVerdict:
    """The decision at the TLS ClientHello.

    * ``passthrough``: do not intercept, relay the bytes (ISUO, banks and other
      personal-data sites, hosts allowed with nothing to look at inside);
    * ``intercept``: terminate TLS and decide per request with `decide` (search engines
      and video sites for SafeSearch and query checks, hosts whose verdict depends on
      the path);
    * ``block``: every URL of this host is blocked for this subject.  `intercept_tls`
      says whether to intercept anyway so the block page can show (False for ISUO and
      personal-data hosts: refuse the connection instead).
    """

    action: Literal["passthrough", "intercept", "block"]
    rule: str
    host: str
    categories: tuple[str, ...] = ()
    clauses: tuple[str, ...] = ()
    intercept_tls: bool = False
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    engine: str | None = None  # search/video engine id when intercepted for SafeSearch

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host, "action": self.action, "rule": self.rule, "categories": list(self.categories),
            "clauses": list(self.clauses), "intercept_tls": self.intercept_tls, "reason": self.reason,
            "params": self.params, "engine": self.engine,
        }


def _verdict(action: str, rule: str, *, url: str, group: str, match: Match, reason: str = "",
             params: dict | None = None, matched: tuple[str, ...] = (), clauses: tuple[str, ...] | None = None
             ) -> Verdict:
    return Verdict(
        action=action, rule=rule, categories=tuple(sorted(match.categories)),
        clauses=clauses if clauses is not None else RULE_CLAUSES[rule], reason=reason or f"{action}.{rule}",
        params=params or {}, url=url, group=group, matched=matched or match.expressions,
    )


def _allow_lists(policy: FilterPolicy, group: str, host: str, path: str, query: str | None,
                 seat: str | None = None) -> tuple[str, str] | None:
    sl = policy.seat_allow_list.get(seat) if seat else None
    if sl:
        hit = sl.match(host, path, query)
        if hit:
            return "seat.allow_list", hit
    gl = policy.group_allow_list.get(group)
    if gl:
        hit = gl.match(host, path, query)
        if hit:
            return "group.allow_list", hit
    if policy.allow_list:
        hit = policy.allow_list.match(host, path, query)
        if hit:
            return "school.allow_list", hit
    return None


def decide_canonical(policy: FilterPolicy, index: CategoryIndex | None, *, url: str, group: str, at: datetime,
                     room: str | None = None, seat: str | None = None, os_user: str | None = None) -> Verdict:
    """`decide` for an URL that is already canonical (saves the canonicalisation)."""
    if at.tzinfo is None:
        at = policy.local(at)  # a naive time is school-local time
    host, path, query = split_canonical(url)
    kind = policy.kind_of(group)
    student = kind == "student"

    ban = policy.active_ban(at=at, seat=seat, os_user=os_user)
    if ban is not None:
        return _verdict("block", "ban", url=url, group=group, match=NO_MATCH,
                        params={"until": ban.until.isoformat(), "by": ban.by, "reason": ban.reason})

    lesson = policy.active_lesson(room=room, group=group, at=at) if student else None
    if lesson is not None and lesson.mode != "allow_list" and lesson.allow_list:
        # sites the teacher allowed for this lesson (open / no-internet lessons): 000 §7.3
        hit = policy.lesson_allow_list(lesson).match(host, path, query)
        if hit:
            match = index.lookup(url) if index is not None else NO_MATCH
            return _verdict("allow", "lesson.allow_list", url=url, group=group, match=match, matched=(hit,),
                            params={"lesson": lesson.id})
    if lesson is not None and lesson.mode == "no_internet":
        return _verdict("block", "lesson.no_internet", url=url, group=group, match=NO_MATCH,
                        params={"lesson": lesson.id, "teacher": lesson.teacher,
                                "until": lesson.ends_at.isoformat()})

    match = index.lookup(url) if index is not None else NO_MATCH

    if lesson is not None and lesson.mode == "allow_list":
        hit = policy.lesson_allow_list(lesson).match(host, path, query)
        if hit:
            return _verdict("allow", "lesson.allow_list", url=url, group=group, match=match, matched=(hit,),
                            params={"lesson": lesson.id})
        allowed = _allow_lists(policy, group, host, path, query, seat)
        if allowed:
            return _verdict("allow", allowed[0], url=url, group=group, match=match, matched=(allowed[1],))
        return _verdict("block", "lesson.not_on_allow_list", url=url, group=group, match=match,
                        params={"lesson": lesson.id, "teacher": lesson.teacher})

    if lesson is None:
        ok, why = policy.in_schedule(group, at)
        if not ok:
            return _verdict("block", f"schedule.{why}", url=url, group=group, match=match)
        mode = policy.unsupervised_mode(group)
        if mode == "no_internet":
            return _verdict("block", "unsupervised.no_internet", url=url, group=group, match=match)
        if mode == "allow_list":
            allowed = _allow_lists(policy, group, host, path, query, seat)
            if allowed:
                return _verdict("allow", allowed[0], url=url, group=group, match=match, matched=(allowed[1],))
            return _verdict("block", "unsupervised.not_on_allow_list", url=url, group=group, match=match)

    allowed = _allow_lists(policy, group, host, path, query, seat)
    if allowed:
        return _verdict("allow", allowed[0], url=url, group=group, match=match, matched=(allowed[1],))

    gb = policy.group_block_list.get(group)
    if gb:
        hit = gb.match(host, path, query)
        if hit:
            return _verdict("block", "group.block_list", url=url, group=group, match=match, matched=(hit,))
    if policy.block_list:
        hit = policy.block_list.match(host, path, query)
        if hit:
            return _verdict("block", "school.block_list", url=url, group=group, match=match, matched=(hit,))

    if match.categories:
        blocked = sorted(c for c in match.categories if policy.category_action(group, c) == "block")
        if blocked:
            return _verdict("block", "category", url=url, group=group, match=match,
                            clauses=clauses_of(blocked) or RULE_CLAUSES["category"],
                            params={"categories": blocked})

    # After the lists and categories, so that an address they name is judged by them (the
    # more telling reason on the block page); an address nothing names is refused here.
    if _is_ip_host(host) and policy.ip_literals.get(group, "block" if student else "allow") == "block":
        return _verdict("block", "ip_literal", url=url, group=group, match=match)

    action = policy.default_action.get(group, "allow")
    return _verdict(action, f"default.{action}", url=url, group=group, match=match)


def _is_ip_host(host: str) -> bool:
    """Whether a canonical host is an IP address (``10.0.0.1``, ``[fd00::1]``)."""
    if host.startswith("["):
        return True
    return bool(host) and host[-1].isdigit() and host.replace(".", "").isdigit()


def _personal_data_host(policy: FilterPolicy, host: str, categories) -> str | None:
    if policy.isuo_hosts.host_listed(host):
        return "isuo"
    if policy.passthrough_hosts.host_listed(host):
        return "passthrough_hosts"
    if any(CATEGORIES[c].passthrough for c in categories if c in CATEGORIES):
        return "personal_data_category"
    return None


def _path_dependent(policy: FilterPolicy, index: CategoryIndex | None, host: str, group: str,
                    lesson_list=None, seat: str | None = None) -> bool:
    lists = [policy.allow_list, policy.block_list, policy.group_allow_list.get(group),
             policy.group_block_list.get(group), lesson_list, policy.seat_allow_list.get(seat or "")]
    if any(lst is not None and lst.has_paths_for(host) for lst in lists):
        return True
    return bool(index is not None and index.lookup_host(host)[2])


def host_has_path_rules(policy: FilterPolicy, index: CategoryIndex | None, host: str) -> bool:
    """Whether any entry with a path (``host/path``) lies under this canonical host or one of
    its parents, in the index (its "has paths" bit) or in any of the policy's lists (school,
    every group's, every lesson's).  When none does, every URL of the host gets the verdict of
    the host's root: the proxy's per-request fast path relies on this (`url_verdict_is_per_host`).
    Deliberately wider than `_path_dependent` (all groups and lessons, not the subject's): a
    false "yes" only costs the fast path, a false "no" would change a verdict."""
    lists = [policy.allow_list, policy.block_list, *policy.group_allow_list.values(),
             *policy.group_block_list.values(), *policy.lesson_allow_lists(),
             *policy.seat_allow_list.values()]
    if any(lst.has_paths_for(host) for lst in lists):
        return True
    return bool(index is not None and index.lookup_host(host)[2])


def _wants_inside(policy: FilterPolicy, host: str) -> str | None:
    """Why the proxy should look inside this host's TLS even when it is allowed."""
    if policy.intercept_hosts.host_listed(host):
        return "intercept_hosts"
    if policy.safe_search and engine_for_host(host):
        return "safe_search"
    return None


def decide(policy: FilterPolicy, index: CategoryIndex | None, *, url: str, group: str, at: datetime,
           room: str | None = None, seat: str | None = None, os_user: str | None = None) -> Verdict:
    """Allow or block one URL for one subject at one time (pure; see the module docstring).
    `index` may be None (no category list: only the policy's own rules apply)."""
    canonical = canonicalize(url)
    verdict = decide_canonical(policy, index, url=canonical, group=group, at=at, room=room, seat=seat,
                               os_user=os_user)
    host = split_canonical(canonical)[0]
    if _personal_data_host(policy, host, verdict.categories):
        intercept = False
    elif verdict.blocked or _wants_inside(policy, host):
        intercept = True
    else:
        intercept = _path_dependent(policy, index, host, group, seat=seat)
    if intercept == verdict.intercept_tls:
        return verdict
    return Verdict(**{**verdict.__dict__, "intercept_tls": intercept})


def decide_host(policy: FilterPolicy, index: CategoryIndex | None, *, host: str, group: str, at: datetime,
                room: str | None = None, seat: str | None = None, os_user: str | None = None) -> HostVerdict:
    """The ClientHello decision from the SNI alone.

    1. a whole-host block (ban, no-internet lesson, schedule, unsupervised no-internet)
       → ``block``;
    2. ISUO hosts, `passthrough_hosts` and personal-data categories (banks) →
       ``passthrough`` when allowed, ``block`` without interception when blocked;
    3. the verdict depends on the path (URL entries in the index or the lists) →
       ``intercept``;
    4. the host's root is blocked → ``block`` (intercepted so the block page shows);
    5. search engines and video sites (SafeSearch, query checks) and `intercept_hosts`
       → ``intercept``;
    6. otherwise ``passthrough``.
    """
    host = host.strip().rstrip(".")
    if ":" in host:  # an IPv6 address as a connection's destination (no brackets): the URL form
        try:
            host = f"[{ipaddress.IPv6Address(host.strip('[]')).compressed}]"
        except ValueError:
            pass
    host = canonical_host(host)
    if at.tzinfo is None:
        at = policy.local(at)
    root = decide_canonical(policy, index, url=f"https://{host}/", group=group, at=at, room=room, seat=seat,
                            os_user=os_user)
    cats, clauses = root.categories, root.clauses

    def hv(action: str, rule: str, intercept: bool, **kw) -> HostVerdict:
        return HostVerdict(action=action, rule=rule, host=host, categories=cats,
                           clauses=kw.pop("clauses", clauses), intercept_tls=intercept,
                           reason=kw.pop("reason", root.reason), params=kw.pop("params", root.params), **kw)

    personal = _personal_data_host(policy, host, cats)
    if root.blocked and root.rule == "lesson.no_internet":
        lesson = policy.active_lesson(room=room, group=group, at=at)
        allowed = policy.lesson_allow_list(lesson) if lesson is not None else None
        if allowed is not None and allowed.has_paths_for(host):  # a page the teacher allowed
            return hv("intercept", "path_rules", True, reason="", params={})
    if root.blocked and root.rule in _WHOLE_HOST_BLOCKS:
        return hv("block", root.rule, personal is None)
    if personal:
        if root.blocked:
            return hv("block", root.rule, False)
        clause = ("000 §6.8",) if personal == "isuo" else ("001 §2.15",)
        return hv("passthrough", personal, False, clauses=clause, reason="", params={})
    student = policy.kind_of(group) == "student"
    lesson = policy.active_lesson(room=room, group=group, at=at) if student else None
    lesson_list = policy.lesson_allow_list(lesson) if lesson is not None else None
    if root.rule in _ALLOW_LIST_ONLY_BLOCKS:
        # Only allow-list entries with paths can open part of this host.
        lists = (policy.allow_list, policy.group_allow_list.get(group), lesson_list,
                 policy.seat_allow_list.get(seat or ""))
        if any(lst is not None and lst.has_paths_for(host) for lst in lists):
            return hv("intercept", "path_rules", True, reason="", params={})
        return hv("block", root.rule, True)
    if _path_dependent(policy, index, host, group, lesson_list, seat):
        return hv("intercept", "path_rules", True, reason="", params={})
    if root.blocked:
        return hv("block", root.rule, True)
    inside = _wants_inside(policy, host)
    if inside:
        return hv("intercept", inside, True, reason="", params={}, engine=engine_for_host(host))
    return hv("passthrough", root.rule, False, reason="", params={})
