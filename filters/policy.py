"""The filtering policy as plain data, read from a policy bundle's JSON.

`FilterPolicy.from_bundle(bundle)` takes ``PolicyBundle.model_dump(mode="json")`` (the
agent's ``policy.json``) and keeps what the filter needs from its ``groups``,
``default_group``, ``filtering``, ``lessons``, ``bans`` and ``isuo`` sections.  Missing
sections and fields get the same defaults as `policy_server.protocol` (a test checks
that they stay in step); this module does not import the protocol, so the library
stays free of pydantic and of the rest of the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .canonical import canonicalize, entry_path, parent_domains, split_canonical

MODES = ("open", "allow_list", "no_internet")
STUDENT = "student"


class PolicyError(ValueError):
    """The bundle cannot be used; the message names the field and what to do."""


@dataclass(frozen=True)
class GroupInfo:
    name: str
    kind: str = STUDENT  # student | teacher | staff | admin
    os_users: tuple[str, ...] = ()
    os_groups: tuple[str, ...] = ()
    class_teacher: str | None = None


@dataclass(frozen=True)
class Band:
    """A weekly time band: days 0=Monday … 6=Sunday, local times [start, end)."""

    days: frozenset[int]
    start: time
    end: time  # 00:00 or anything <= start means "until midnight / past midnight"

    def contains(self, local: datetime) -> bool:
        t = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        # Band passes midnight (or ends at 24:00): the part after midnight belongs to the
        # previous day's band.
        if day in self.days and t >= self.start:
            return True
        return (day - 1) % 7 in self.days and t < self.end


@dataclass(frozen=True)
class LessonInfo:
    id: str
    room: str
    teacher: str
    group: str | None
    mode: str
    allow_list: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True)
class BanInfo:
    id: str
    seat: str | None
    os_user: str | None
    until: datetime
    reason: str = ""
    by: str = ""

    def applies(self, *, at: datetime, seat: str | None, os_user: str | None) -> bool:
        if at >= self.until:
            return False
        return bool((self.seat and seat == self.seat) or (self.os_user and os_user == self.os_user))


class SiteList:
    """Domains and URL prefixes (the school's allow/block lists, a lesson's allow-list).
    A domain matches itself and its subdomains; ``host/path`` matches that path and
    below (``/path``, ``/path/…``, ``/path?…``)."""

    def __init__(self, entries: list[str] | tuple[str, ...] = (), *, what: str = "list"):
        self.entries = tuple(entries)
        self.domains: set[str] = set()
        self.prefixes: dict[str, list[str]] = {}
        for raw in self.entries:
            text = raw.strip()
            if text.startswith("*."):
                text = text[2:]
            if not text:
                continue
            host, path, query = split_canonical(canonicalize(text))
            if not host:
                raise PolicyError(f"{what}: {raw!r} is not a domain or URL; write it as example.kg or "
                                  "example.kg/path")
            if path == "/" and query is None:
                self.domains.add(host)
            else:
                self.prefixes.setdefault(host, []).append(entry_path(path, query))

    def __bool__(self) -> bool:
        return bool(self.domains or self.prefixes)

    def has_paths_for(self, host: str) -> bool:
        return any(s in self.prefixes for s in parent_domains(host))

    def host_listed(self, host: str) -> str | None:
        """The domain entry covering the whole host, if any."""
        for suffix in parent_domains(host):
            if suffix in self.domains:
                return suffix
        return None

    def match(self, host: str, path: str, query: str | None) -> str | None:
        """The entry that covers this URL, or None.  Paths are compared without letter case;
        an entry with a query matches the same path carrying its parameters (and any others)."""
        folded = path.lower()
        params: frozenset[str] | None = None
        for suffix in parent_domains(host):
            if suffix in self.domains:
                return suffix
            for prefix in self.prefixes.get(suffix, ()):
                if "?" in prefix:
                    entry_path_, _, entry_query = prefix.partition("?")
                    if folded != entry_path_:
                        continue
                    if params is None:
                        params = frozenset((query or "").lower().split("&"))
                    if all(p in params for p in entry_query.split("&") if p):
                        return suffix + prefix
                    continue
                if folded == prefix or (folded.startswith(prefix) and (
                        prefix.endswith("/") or folded[len(prefix)] in "/?")):
                    return suffix + prefix
        return None


def _parse_time(value: str, what: str) -> time:
    try:
        hours, minutes = (int(x) for x in value.split(":"))
        if hours == 24 and minutes == 0:
            return time(0, 0)
        return time(hours, minutes)
    except (ValueError, TypeError):
        raise PolicyError(f"{what}: {value!r} is not a time; write HH:MM, e.g. 08:30") from None


def _parse_dt(value, what: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise PolicyError(f"{what}: {value!r} is not a date and time (ISO 8601 expected)") from None
    if dt.tzinfo is None:
        raise PolicyError(f"{what}: {value!r} has no time zone; add one, e.g. +06:00")
    return dt


@dataclass
class FilterPolicy:
    """Everything the decision needs, as plain data."""

    groups: dict[str, GroupInfo] = field(default_factory=lambda: {
        "student": GroupInfo("student", "student"), "teacher": GroupInfo("teacher", "teacher")})
    default_group: str = "student"
    category_actions: dict[str, dict[str, str]] = field(default_factory=dict)
    default_action: dict[str, str] = field(default_factory=dict)
    allow_list: SiteList = field(default_factory=SiteList)
    block_list: SiteList = field(default_factory=SiteList)
    group_allow_list: dict[str, SiteList] = field(default_factory=dict)
    group_block_list: dict[str, SiteList] = field(default_factory=dict)
    seat_allow_list: dict[str, SiteList] = field(default_factory=dict)  # seat → its own allow-list
    schedules: dict[str, tuple[Band, ...]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    unsupervised: dict[str, str] = field(default_factory=dict)
    safe_search: bool = True
    download_block: dict[str, tuple[str, ...]] = field(default_factory=dict)
    passthrough_hosts: SiteList = field(default_factory=SiteList)
    intercept_hosts: SiteList = field(default_factory=SiteList)
    alert_threshold: int = 50
    site_categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ip_literals: dict[str, str] = field(default_factory=dict)  # group → allow | block
    index_sha256: str | None = None
    timezone: str = "Asia/Bishkek"
    lessons: tuple[LessonInfo, ...] = ()
    bans: tuple[BanInfo, ...] = ()
    isuo_hosts: SiteList = field(default_factory=lambda: SiteList(["emis.edu.gov.kg"]))
    version: int = 0

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_bundle(cls, bundle: dict | None) -> FilterPolicy:
        """Read ``PolicyBundle.model_dump(mode="json")``; raises PolicyError on bad data."""
        bundle = bundle or {}
        if not isinstance(bundle, dict):
            raise PolicyError("the policy bundle must be a JSON object (the agent's policy.json)")
        f = bundle.get("filtering") or {}
        policy = cls()
        if "groups" in bundle:
            policy.groups = {}
            for g in bundle["groups"]:
                info = GroupInfo(g["name"], g.get("kind", STUDENT), tuple(g.get("os_users", ())),
                                 tuple(g.get("os_groups", ())), g.get("class_teacher"))
                policy.groups[info.name] = info
        policy.default_group = bundle.get("default_group", "student")
        policy.version = int(bundle.get("version", 0) or 0)
        policy.category_actions = {g: dict(a) for g, a in (f.get("category_actions") or {}).items()}
        for group, actions in policy.category_actions.items():
            for cat, action in actions.items():
                if action not in ("allow", "block"):
                    raise PolicyError(f"filtering.category_actions.{group}.{cat}: {action!r} "
                                      "must be allow or block")
        policy.default_action = dict(f.get("default_action") or {})
        policy.allow_list = SiteList(f.get("allow_list") or [], what="filtering.allow_list")
        policy.block_list = SiteList(f.get("block_list") or [], what="filtering.block_list")
        policy.group_allow_list = {g: SiteList(v, what=f"filtering.group_allow_list.{g}")
                                   for g, v in (f.get("group_allow_list") or {}).items()}
        policy.group_block_list = {g: SiteList(v, what=f"filtering.group_block_list.{g}")
                                   for g, v in (f.get("group_block_list") or {}).items()}
        policy.seat_allow_list = {s: SiteList(v, what=f"filtering.seat_allow_list.{s}")
                                  for s, v in (f.get("seat_allow_list") or {}).items()}
        policy.schedules = {
            g: tuple(Band(frozenset(b.get("days", [0, 1, 2, 3, 4])),
                          _parse_time(b.get("start", "08:00"), f"filtering.schedules.{g}.start"),
                          _parse_time(b.get("end", "18:00"), f"filtering.schedules.{g}.end"))
                     for b in bands)
            for g, bands in (f.get("schedules") or {}).items()
        }
        try:
            policy.holidays = frozenset(date.fromisoformat(str(d)) for d in f.get("holidays") or [])
        except ValueError as exc:
            raise PolicyError(f"filtering.holidays: {exc}; write dates as YYYY-MM-DD") from None
        policy.unsupervised = dict(f.get("unsupervised") or {})
        for g, mode in policy.unsupervised.items():
            if mode not in MODES:
                raise PolicyError(f"filtering.unsupervised.{g}: {mode!r} must be one of {', '.join(MODES)}")
        policy.safe_search = bool(f.get("safe_search", True))
        policy.download_block = {g: tuple(v) for g, v in (f.get("download_block") or {}).items()}
        policy.passthrough_hosts = SiteList(f.get("passthrough_hosts") or [],
                                            what="filtering.passthrough_hosts")
        policy.intercept_hosts = SiteList(f.get("intercept_hosts") or [], what="filtering.intercept_hosts")
        policy.alert_threshold = int(f.get("alert_threshold", 50))
        policy.site_categories = {k: tuple(v) for k, v in (f.get("site_categories") or {}).items()}
        policy.ip_literals = dict(f.get("ip_literals") or {})
        for g, action in policy.ip_literals.items():
            if action not in ("allow", "block"):
                raise PolicyError(f"filtering.ip_literals.{g}: {action!r} must be allow or block")
        policy.index_sha256 = f.get("index_sha256")
        policy.timezone = f.get("timezone") or "Asia/Bishkek"
        try:
            ZoneInfo(policy.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(f"filtering.timezone: unknown time zone {policy.timezone!r}; "
                              "use a name like Asia/Bishkek") from None
        policy.lessons = tuple(
            LessonInfo(str(le["id"]), str(le["room"]), str(le.get("teacher", "")), le.get("group"),
                       le.get("mode", "open"), tuple(le.get("allow_list") or ()),
                       _parse_dt(le["starts_at"], f"lessons[{i}].starts_at"),
                       _parse_dt(le["ends_at"], f"lessons[{i}].ends_at"))
            for i, le in enumerate(bundle.get("lessons") or [])
        )
        for lesson in policy.lessons:
            if lesson.mode not in MODES:
                raise PolicyError(f"lesson {lesson.id}: mode {lesson.mode!r} must be one of "
                                  f"{', '.join(MODES)}")
        policy.bans = tuple(
            BanInfo(str(b["id"]), b.get("seat"), b.get("os_user"), _parse_dt(b["until"], f"bans[{i}].until"),
                    b.get("reason", ""), b.get("by", ""))
            for i, b in enumerate(bundle.get("bans") or [])
        )
        isuo = bundle.get("isuo") or {}
        policy.isuo_hosts = SiteList(isuo.get("hosts", ["emis.edu.gov.kg"]), what="isuo.hosts")
        return policy

    # ------------------------------------------------------------------ questions

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def kind_of(self, group: str) -> str:
        info = self.groups.get(group)
        return info.kind if info else STUDENT  # an unknown group gets the strictest treatment

    def group_of(self, os_user: str | None, os_groups: tuple[str, ...] | list[str] = ()) -> str:
        """Same rule as PolicyBundle.group_of: listed by user name first, then by OS group."""
        for g in self.groups.values():
            if os_user and os_user in g.os_users:
                return g.name
        for g in self.groups.values():
            if set(os_groups) & set(g.os_groups):
                return g.name
        return self.default_group

    def local(self, at: datetime) -> datetime:
        """`at` in the school's time zone (a naive `at` is taken as school-local time)."""
        if at.tzinfo is None:
            return at.replace(tzinfo=self.zone)
        return at.astimezone(self.zone)

    def active_lesson(self, *, room: str | None, group: str, at: datetime) -> LessonInfo | None:
        """The lesson running now in `room` that covers `group` (a lesson without a
        group covers every student group in the room)."""
        if room is None:
            return None
        for lesson in self.lessons:
            if lesson.room == room and lesson.active(at) and (lesson.group is None or lesson.group == group):
                return lesson
        return None

    def active_ban(self, *, at: datetime, seat: str | None, os_user: str | None) -> BanInfo | None:
        for ban in self.bans:
            if ban.applies(at=at, seat=seat, os_user=os_user):
                return ban
        return None

    def in_schedule(self, group: str, at: datetime) -> tuple[bool, str]:
        """(may the group browse now, why not: "holiday" | "outside_hours" | "")."""
        bands = self.schedules.get(group)
        if not bands:
            return True, ""
        local = self.local(at)
        if local.date() in self.holidays:
            return False, "holiday"
        if any(b.contains(local) for b in bands):
            return True, ""
        return False, "outside_hours"

    def unsupervised_mode(self, group: str) -> str:
        """What a group gets outside a lesson: 001 §2.9 says students only under a
        teacher's supervision, so student groups default to the school allow-list."""
        if group in self.unsupervised:
            return self.unsupervised[group]
        return "allow_list" if self.kind_of(group) == STUDENT else "open"

    def category_action(self, group: str, category: str) -> str:
        from .categories import CATEGORIES

        explicit = self.category_actions.get(group, {}).get(category)
        if explicit:
            return explicit
        cat = CATEGORIES.get(category)
        return cat.default_for(self.kind_of(group)) if cat else "allow"

    @cached_property
    def _lesson_lists(self) -> dict[str, SiteList]:
        return {le.id: SiteList(le.allow_list, what=f"lesson {le.id} allow_list") for le in self.lessons}

    def lesson_allow_list(self, lesson: LessonInfo) -> SiteList:
        return self._lesson_lists[lesson.id]

    def lesson_allow_lists(self) -> tuple[SiteList, ...]:
        return tuple(self._lesson_lists.values())

    def time_boundaries(self) -> tuple[datetime, ...]:
        """Every instant at which a ban ends or a lesson starts or ends: the decision can change
        there.  (Weekly bands and holidays change it only on whole local minutes.)"""
        out: list[datetime] = [ban.until for ban in self.bans]
        for lesson in self.lessons:
            out += (lesson.starts_at, lesson.ends_at)
        return tuple(out)
