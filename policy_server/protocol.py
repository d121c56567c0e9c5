"""Kalkan wire protocol: what agents and the policy server say to each other.

This module is shared by the agent and the server and imports nothing else of the
project (only pydantic and the standard library), so an agent can be built from it
alone.  Two things travel on the wire:

* **Events** (agent → server): one envelope (`EventEnvelope`) with a typed `data`
  model per event type (`EVENT_TYPES`).  The envelope's `id` is a UUID made on the
  agent; the server stores each id once, forever.  `agent_id` is never in the body:
  the server takes it from the bearer token.
* **Policy bundles** (server → agent): one versioned document (`PolicyBundle`) with a
  section per concern.  Every section has defaults, so an empty bundle is valid.

Compatibility rule: `PROTOCOL_VERSION` grows only when a change is incompatible.
Within one protocol version, fields are only *added* and always with defaults;
data models ignore fields they do not know (a newer agent talking to an older
server loses the extra detail, not the event), policy bundles likewise (an agent
older than its server ignores new sections and fields), and the server keeps accepting
every protocol version in `SUPPORTED_PROTOCOL_VERSIONS`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
)

PROTOCOL_VERSION = 1
SUPPORTED_PROTOCOL_VERSIONS = frozenset({1})

# Size limits.  The server answers 413 past them; the agent splits batches to fit.
MAX_EVENTS_PER_BATCH = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
# JSON nesting: orjson's own parse limit for a whole body; one event is held to what orjson
# serializes (254 levels), checked where its size is measured (events/validation.py).
MAX_JSON_DEPTH = 1024
MAX_EVENT_DEPTH = 254

# The times an event may carry.  Far outside any real clock (a workstation whose battery died
# boots in 2000 or 1970), far inside what Python, SQLite and PostgreSQL can hold: a year-1
# or year-9999 time with an offset overflows when turned into UTC.  Checked by pydantic's
# own (Rust) constraint, before any conversion.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(3000, 1, 1, tzinfo=UTC)
Time = Annotated[datetime, Field(ge=MIN_TIME, lt=MAX_TIME)]
AwareTime = Annotated[AwareDatetime, Field(ge=MIN_TIME, lt=MAX_TIME)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# Integers the server stores in an INTEGER column (PostgreSQL: 32 bits).
DB_INT_MAX = 2**31 - 1

_CLAUSE = re.compile(r"^\d{3} §\d+(\.\d+)*$")


def _check_clause(value: str) -> str:
    if not _CLAUSE.match(value):
        raise ValueError(
            f"clause {value!r} is not of the form '000 §5.4' (document number, space, §, clause number)"
        )
    return value


Clause = Annotated[str, AfterValidator(_check_clause)]


class _Data(BaseModel):
    """Base of every event's `data`: unknown fields are ignored (see module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Section(BaseModel):
    """Base of the policy bundle and its parts.  The bundle travels server → agent, and a
    school upgrades its server before every workstation: an agent ignores the fields and
    sections it does not know yet (its `content_hash` check runs over the raw JSON, so it
    still verifies).  People's edits are validated by the server's own request models."""

    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------- events


class Subject(_Strict):
    """Who and where: the OS user at the seat.  Minimal on purpose (001 §2.15)."""

    os_user: str | None = Field(default=None, max_length=64)
    seat: str | None = Field(default=None, max_length=64)


class CollectorState(StrEnum):
    ok = "ok"
    degraded = "degraded"
    failed = "failed"
    stopped = "stopped"


class CollectorHealth(_Data):
    state: CollectorState
    detail: str = ""
    since: Time | None = None


class Heartbeat(_Data):
    """`agent.heartbeat`: the agent is alive, and how its parts are."""

    agent_version: str
    protocol_version: int = Field(default=PROTOCOL_VERSION, ge=0, le=DB_INT_MAX)
    hostname: str = ""
    policy_version: int | None = Field(default=None, ge=0, le=DB_INT_MAX)
    outbox_depth: int = 0
    dropped_events: dict[str, int] = Field(default_factory=dict)
    collectors: dict[str, CollectorHealth] = Field(default_factory=dict)
    uptime_s: float = 0.0
    # The server certificate fingerprints the agent accepts (hex SHA-256, the pinned one first;
    # two during a rotation): `kalkan-server tls status` counts the seats ready for the next one.
    tls_pins: list[Sha256Hex] = Field(default_factory=list, max_length=4)

    @model_serializer(mode="wrap")
    def _without_empty_pins(self, handler):
        """No `tls_pins` key when there are none: a heartbeat stays byte for byte what it was
        before rotations existed (the outbox's sizes, an older server)."""
        data = handler(self)
        if isinstance(data, dict) and not data.get("tls_pins"):
            data.pop("tls_pins", None)
        return data


class AgentUpgrade(_Data):
    """`agent.upgrade`: the agent ran an upgrade ordered from the console (agent/upgrade.py)."""

    rollout: int = Field(ge=0, le=DB_INT_MAX)
    state: Literal["upgraded", "rolled_back", "failed"]
    from_version: str = Field(default="", max_length=64)
    to_version: str = Field(default="", max_length=64)
    reason: str = Field(default="", max_length=2000)  # the package manager's own words
    reason_code: Literal["", "fetch_failed", "install_failed", "not_running", "rollback_failed"] = ""


class EventsDropped(_Data):
    """`agent.events_dropped`: the outbox was full and dropped these (counts by type)."""

    counts: dict[str, int]
    outbox_bytes: int = 0


# --- web (filtering proxy)


class WebReport(_Data):
    """`web.report`: a user reports a bad URL (000 §8.3, 001 §3.4)."""

    url: str = Field(min_length=1, max_length=4096)
    comment: str | None = Field(default=None, max_length=2000)


class WebBlocked(_Data):
    """`web.blocked`: a request was refused by the filter."""

    url: str = Field(max_length=4096)
    host: str = ""
    categories: list[str] = Field(default_factory=list)
    rule: str = ""
    group: str = ""
    download: bool = False


class WebAlert(_Data):
    """`web.alert`: a search query or page scored over the phrase-alert threshold."""

    url: str = Field(default="", max_length=4096)
    engine: str = ""
    query: str = Field(default="", max_length=2000)
    score: int
    threshold: int = 0
    lists: list[str] = Field(default_factory=list)
    phrases: list[str] = Field(default_factory=list)


class WebUnblockRequest(_Data):
    """`web.unblock_request`: a user asks the responsible person to unblock a page."""

    url: str = Field(max_length=4096)
    categories: list[str] = Field(default_factory=list)
    rule: str = ""
    comment: str | None = Field(default=None, max_length=2000)


class WebUsage(_Data):
    """`web.usage`: allowed traffic only as per-domain counts per period (001 §2.15)."""

    period_start: Time
    period_end: Time
    counts: dict[str, int]


class LessonActivity(_Data):
    """`lesson.activity`: during a lesson in the seat's room only, the site a student has open
    (domain; title only where the proxy intercepts), a raised hand, a request to the teacher.
    The server routes it to the lesson's teacher and keeps it only until the lesson's summary
    (001 §2.15): it is never stored as an event."""

    kind: Literal["open", "hand", "request"]
    host: str = Field(default="", max_length=253)
    title: str = Field(default="", max_length=300)
    url: str = Field(default="", max_length=2000)
    lesson_id: str = Field(default="", max_length=32)


class IsuoSession(_Data):
    """`isuo.session`: someone used ISUO from this seat (no content, only when)."""

    host: str
    state: Literal["start", "end"]
    started_at: Time
    ended_at: Time | None = None


# --- antivirus


class AvHealth(_Data):
    """`av.health`: clamd reachability and signature freshness (000 §5.4)."""

    clamd_reachable: bool
    signature_version: str | None = None
    signature_date: Time | None = None
    signature_age_days: float | None = None
    problem: str | None = None


class AvScanKind(StrEnum):
    full = "full"
    media = "media"
    download = "download"


class AvScanStarted(_Data):
    scan_id: str
    kind: AvScanKind
    roots: list[str] = Field(default_factory=list)
    resumed: bool = False
    catch_up: bool = False


class AvScanProgress(_Data):
    scan_id: str
    files: int
    bytes: int
    threats: int = 0


class AvScanCompleted(_Data):
    """`av.scan.completed`: the per-workstation proof that 000 §5.4 was met."""

    scan_id: str
    kind: AvScanKind
    files: int
    bytes: int
    threats: int
    errors: int = 0
    duration_s: float
    signature_version: str | None = None
    started_at: Time | None = None
    resumed: bool = False


class AvThreat(_Data):
    path: str
    signature: str
    sha256: str | None = None
    source: AvScanKind = AvScanKind.full
    quarantined: bool = False
    quarantine_id: str | None = None


# --- USB


class UsbInterface(_Data):
    cls: int = Field(ge=0, le=255, description="bInterfaceClass")
    subclass: int = 0
    protocol: int = 0


class UsbDevice(_Data):
    vendor_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    product_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    serial: str | None = None
    manufacturer: str | None = None
    product: str | None = None
    bus_path: str = ""
    interfaces: list[UsbInterface] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list, description="classification, e.g. ['storage']")


class UsbEvent(_Data):
    """`usb.connected`, `usb.blocked`, `usb.allowed`."""

    device: UsbDevice
    reason: str = ""


# --- software integrity


class IntegrityChangeKind(StrEnum):
    added = "added"
    modified = "modified"
    removed = "removed"
    permissions = "permissions"


class IntegrityChanged(_Data):
    path: str
    change: IntegrityChangeKind
    by_package_manager: bool = False
    package: str | None = None
    old_sha256: str | None = None
    new_sha256: str | None = None
    old_mode: int | None = None
    new_mode: int | None = None
    detected_by: Literal["watch", "fast_check", "full_check"] = "fast_check"
    # content changed but the modification time was set back to the old one (an attempt to hide it)
    mtime_restored: bool = False
    # "program": a baselined program folder; "drop": an executable appeared where a user can drop one
    area: Literal["program", "drop"] = "program"


class IntegrityBaseline(_Data):
    """`integrity.baseline`: the baseline's digest, kept on the server (tamper evidence)."""

    digest: str
    files: int
    roots: list[str] = Field(default_factory=list)
    # the chain: version number and the digest of the version before (None for the first)
    seq: int = 0
    prev_digest: str | None = None
    # created | accepted | package_update | paths_changed | rebuilt | rebuilt_after_tamper | verified
    reason: str = "created"


class IntegrityTampered(_Data):
    detail: str
    last_digest: str | None = None  # the last digest this agent wrote (its anchor), if readable


class SoftwareChanged(_Data):
    """`software.changed`: the package inventory differs from the last one."""

    installed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    upgraded: list[str] = Field(default_factory=list)


# --- idle locking


class IdleLocked(_Data):
    session: str = ""
    idle_s: float
    timeout_s: float
    reason: Literal["idle", "isuo_end", "isuo_idle"] = "idle"


class IdleLockFailed(_Data):
    session: str = ""
    error: str
    # why a lock was due; "no_helper": an ISUO session ended and no session helper was running
    reason: Literal["idle", "isuo_end", "isuo_idle", "no_helper"] = "idle"
    idle_s: float | None = None


# --- network checks


class NetArpSpoof(_Data):
    gateway_ip: str
    expected_mac: str | None = None
    seen_macs: list[str]
    occurrences: int = 1  # frames folded into this event by the agent's rate limit


class NetRogueDhcp(_Data):
    server_ip: str
    server_mac: str | None = None
    offered_ip: str | None = None
    occurrences: int = 1  # frames folded into this event by the agent's rate limit


class NetRogueRa(_Data):
    """An IPv6 Router Advertisement from a router the policy does not list (the IPv6 twin of
    rogue DHCP): hosts that accept it take the sender as their default router (SLAAC)."""

    src_mac: str
    src_ip: str  # the router's link-local address
    router_lifetime: int  # seconds; 0 means "not a default router" and is never reported
    prefixes: list[str] = Field(default_factory=list)  # announced on-link/SLAAC prefixes, "2001:db8::/64"
    interface: str = ""
    occurrences: int = 1  # frames folded into this event by the agent's rate limit


class NetBypass(_Data):
    # dns … other: the network collector's capture; mismatch (a name that does not lead to the
    # destination), raw (neither HTTP nor TLS on a web port), tunnel (CONNECT or request to a
    # port other than the web ports): the proxy; refused: the firewall refused the packets
    kind: Literal["dns", "dot", "doh", "vpn", "tor", "quic", "other", "mismatch", "raw", "tunnel", "refused"]
    dst_ip: str = ""
    dst_port: int | None = None
    detail: str = ""
    occurrences: int = 1  # packets folded into this event by the agent's rate limit


# The registry of every event type: type → (data model, clauses it serves by default).
EVENT_TYPES: dict[str, tuple[type[_Data], tuple[str, ...]]] = {
    "agent.heartbeat": (Heartbeat, ("000 §3.2",)),
    "agent.events_dropped": (EventsDropped, ("000 §3.2",)),
    "agent.upgrade": (AgentUpgrade, ("000 §3.2",)),
    "web.report": (WebReport, ("000 §8.3", "001 §3.4")),
    "web.blocked": (WebBlocked, ("000 §8.1", "001 §3.3")),
    "web.alert": (WebAlert, ("000 §8.2", "001 §2.12")),
    "web.unblock_request": (WebUnblockRequest, ("001 §2.6",)),
    "web.usage": (WebUsage, ("000 §4.2", "001 §2.15")),
    "lesson.activity": (LessonActivity, ("000 §7.3", "001 §2.15")),
    "isuo.session": (IsuoSession, ("000 §6.8",)),
    "av.health": (AvHealth, ("000 §5.4",)),
    "av.scan.started": (AvScanStarted, ("000 §5.4",)),
    "av.scan.progress": (AvScanProgress, ("000 §5.4",)),
    "av.scan.completed": (AvScanCompleted, ("000 §5.4",)),
    "av.threat": (AvThreat, ("000 §4.2", "000 §5.4")),
    "usb.connected": (UsbEvent, ("000 §6.5",)),
    "usb.blocked": (UsbEvent, ("000 §6.5",)),
    "usb.allowed": (UsbEvent, ("000 §6.5",)),
    "integrity.changed": (IntegrityChanged, ("000 §4.2",)),
    "integrity.baseline": (IntegrityBaseline, ("000 §4.2",)),
    "integrity.tampered": (IntegrityTampered, ("000 §4.2", "000 §5.6")),
    "software.changed": (SoftwareChanged, ("000 §4.2", "000 §6.5")),
    "idle.locked": (IdleLocked, ("000 §6.4", "000 §6.7")),
    "idle.lock_failed": (IdleLockFailed, ("000 §6.4", "000 §6.8")),
    "net.arp_spoof": (NetArpSpoof, ("000 §5.6",)),
    "net.rogue_dhcp": (NetRogueDhcp, ("000 §5.6",)),
    "net.rogue_ra": (NetRogueRa, ("000 §5.6",)),
    "net.bypass": (NetBypass, ("000 §5.6", "001 §2.11")),
}

# Outbox priority when the disk budget is full: lowest value is dropped first.
EVENT_PRIORITY_LOW, EVENT_PRIORITY_NORMAL, EVENT_PRIORITY_SECURITY = 0, 1, 2
_LOW_VALUE = {"agent.heartbeat", "av.scan.progress", "web.usage"}
_NORMAL = {"av.health", "av.scan.started", "usb.connected", "usb.allowed", "integrity.baseline",
           "software.changed", "isuo.session", "agent.events_dropped", "agent.upgrade"}


def event_priority(event_type: str) -> int:
    """How much an event is worth keeping when the outbox must drop something."""
    if event_type in _LOW_VALUE:
        return EVENT_PRIORITY_LOW
    if event_type in _NORMAL:
        return EVENT_PRIORITY_NORMAL
    return EVENT_PRIORITY_SECURITY


class UnknownEventType(ValueError):
    pass


class EventEnvelope(_Strict):
    """One event as it travels.  `data` is validated against its type's model."""

    id: uuid.UUID
    type: str = Field(pattern=r"^[a-z_]+(\.[a-z_]+)+$", max_length=64)
    occurred_at: AwareTime
    subject: Subject | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    clauses: list[Clause] = Field(default_factory=list, max_length=16)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def typed_data(self) -> _Data:
        """The `data` as its type's model; raises UnknownEventType or ValidationError."""
        try:
            model, _ = EVENT_TYPES[self.type]
        except KeyError:
            raise UnknownEventType(
                f"unknown event type {self.type!r}; known types: {', '.join(sorted(EVENT_TYPES))}"
            ) from None
        return model.model_validate(self.data)


def make_event(
    event_type: str,
    data: _Data | dict[str, Any],
    *,
    subject: Subject | None = None,
    clauses: list[str] | None = None,
    occurred_at: datetime | None = None,
) -> EventEnvelope:
    """Build a valid envelope on the agent, filling id, time and the type's default clauses."""
    model, default_clauses = EVENT_TYPES[event_type]
    typed = data if isinstance(data, _Data) else model.model_validate(data)
    return EventEnvelope(
        id=uuid.uuid4(),
        type=event_type,
        occurred_at=occurred_at or datetime.now(UTC),
        subject=subject,
        data=typed.model_dump(mode="json"),
        clauses=list(clauses if clauses is not None else default_clauses),
    )


class EventBatch(_Strict):
    events: list[dict[str, Any]] = Field(max_length=MAX_EVENTS_PER_BATCH)


class RejectedEvent(BaseModel):
    id: str | None
    error: str


class BatchResult(BaseModel):
    accepted: list[str] = Field(default_factory=list)
    duplicates: list[str] = Field(default_factory=list)
    rejected: list[RejectedEvent] = Field(default_factory=list)


def validation_message(exc: ValidationError) -> str:
    """A one-line, person-readable summary of a pydantic error."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {_time_range_message(err) or err['msg']}")
    return "; ".join(parts)


_MIN_TIME_TEXT = MIN_TIME.isoformat().replace("+00:00", "Z")
_MAX_TIME_TEXT = MAX_TIME.isoformat().replace("+00:00", "Z")


def _time_range_message(err: dict) -> str | None:
    """A clearer text for a time outside MIN_TIME..MAX_TIME (usually a wrong clock)."""
    bound = next(iter((err.get("ctx") or {}).values()), None)
    if (err.get("type") not in ("greater_than_equal", "less_than")
            or str(bound) not in (_MIN_TIME_TEXT, _MAX_TIME_TEXT)):
        return None
    return (f"the time {err.get('input')!s} is outside the supported range {MIN_TIME:%Y-%m-%d} to "
            f"{MAX_TIME.year - 1}-12-31 (UTC); check the workstation's clock")


# --------------------------------------------------------------------------- enrolment


class EnrollRequest(_Strict):
    code: str = Field(min_length=4, max_length=64)
    hostname: str = Field(min_length=1, max_length=253)
    os: str = Field(default="", max_length=128)
    agent_version: str = Field(default="", max_length=32)
    protocol_version: int = PROTOCOL_VERSION
    seat: str | None = Field(default=None, max_length=64)


class EnrollResponse(BaseModel):
    agent_id: str
    token: str
    school: str = ""
    room: str | None = None
    seat: str | None = None
    protocol_version: int = PROTOCOL_VERSION
    policy_url: str = "/api/v1/policy"
    events_url: str = "/api/v1/events"
    push_url: str = "/api/v1/policy/stream"


# --------------------------------------------------------------------------- policy bundle


class GroupKind(StrEnum):
    student = "student"
    teacher = "teacher"
    staff = "staff"
    admin = "admin"


class Group(_Section):
    """A group of OS users with the same rules (001 §2.6: categories of users)."""

    name: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    kind: GroupKind = GroupKind.student
    os_users: list[str] = Field(default_factory=list)
    os_groups: list[str] = Field(default_factory=list)
    class_teacher: str | None = None


class TimeBand(_Section):
    """A weekly band: days 0=Monday … 6=Sunday, local "HH:MM" times."""

    days: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    start: str = Field(default="08:00", pattern=r"^\d{2}:\d{2}$")
    end: str = Field(default="18:00", pattern=r"^\d{2}:\d{2}$")


class LessonMode(StrEnum):
    open = "open"  # the group's normal category rules apply
    allow_list = "allow_list"  # only the lesson's allow-list (and the school's)
    no_internet = "no_internet"


class Lesson(_Section):
    """A supervised lesson in a room (001 §2.9, 000 §7.3)."""

    id: str
    room: str
    teacher: str
    group: str | None = None
    mode: LessonMode = LessonMode.open
    allow_list: list[str] = Field(default_factory=list)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    # Live controls from the teacher's lesson page (policy_server/lessons); all end with the lesson.
    locked_seats: list[str] = Field(default_factory=list)  # "*" = every seat of the room
    lock_message: str = ""
    lock_at: AwareDatetime | None = None  # lock when this time comes (the countdown's end)
    eyes_until: AwareDatetime | None = None  # "eyes on me": screens locked with the message until then
    report_activity: bool = True  # seats send the lesson's teacher their open site (lesson time only)


class Ban(_Section):
    """A teacher forbids one student or seat further internet work (000 §7.3)."""

    id: str
    seat: str | None = None
    os_user: str | None = None
    until: AwareDatetime
    reason: str = ""
    by: str = ""
    room: str | None = None  # a lesson's ban: only that room's agents receive it
    lesson_id: str | None = None


class FilteringSection(_Section):
    """Content filtering.  `filters.policy.FilterPolicy.from_bundle` reads this section
    (inside the bundle's `model_dump(mode="json")`); keep the two in step."""

    # group → category → "allow" | "block"; categories are Kalkan category ids (filters/).
    category_actions: dict[str, dict[str, Literal["allow", "block"]]] = Field(default_factory=dict)
    default_action: dict[str, Literal["allow", "block"]] = Field(default_factory=dict)
    allow_list: list[str] = Field(default_factory=list)  # the school's own, domains or URL prefixes
    block_list: list[str] = Field(default_factory=list)
    group_allow_list: dict[str, list[str]] = Field(default_factory=dict)
    group_block_list: dict[str, list[str]] = Field(default_factory=dict)
    # seat → entries allowed on that seat only (an unblock request granted for one seat)
    seat_allow_list: dict[str, list[str]] = Field(default_factory=dict)
    schedules: dict[str, list[TimeBand]] = Field(default_factory=dict)  # when each group may browse
    holidays: list[date] = Field(default_factory=list)
    # What a student group gets outside a lesson (001 §2.9): default only the school allow-list.
    unsupervised: dict[str, LessonMode] = Field(default_factory=dict)
    safe_search: bool = True
    download_block: dict[str, list[str]] = Field(default_factory=dict)  # group → file kinds
    passthrough_hosts: list[str] = Field(default_factory=list)  # never intercepted (banks, …)
    intercept_hosts: list[str] = Field(default_factory=list)  # always intercepted (search, video)
    alert_threshold: int = 50
    index_sha256: str | None = None  # compiled category index artifact, content-addressed
    # The school's own categorisation on top of the index (entry → Kalkan category ids).
    site_categories: dict[str, list[str]] = Field(default_factory=dict)
    # URLs whose host is an IP address (no name to judge): group → allow/block; unset: block
    # for student groups, allow for the others.
    ip_literals: dict[str, Literal["allow", "block"]] = Field(default_factory=dict)
    timezone: str = "Asia/Bishkek"


class UsbAllowEntry(_Section):
    vendor_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    product_id: str = Field(pattern=r"^[0-9a-f]{4}$")
    serial: str | None = None  # None: any serial of this model
    note: str = ""
    added_by: str = ""


class UsbSection(_Section):
    enforce: bool = True
    allow: list[UsbAllowEntry] = Field(default_factory=list)


class AcceptedChange(_Section):
    """The responsible person accepted a detected change as authorised (000 §4.2)."""

    path: str
    sha256: str | None = None  # None: the file's removal was accepted
    accepted_at: AwareDatetime
    by: str = ""


class IntegritySection(_Section):
    paths: list[str] = Field(default_factory=lambda: ["/usr/bin", "/usr/sbin", "/usr/lib", "/opt"])
    drop_paths: list[str] = Field(default_factory=lambda: ["/tmp", "/home/*/Downloads", "/home/*/.local/bin"])
    exclude: list[str] = Field(default_factory=list)
    full_rehash_hours: int = 168
    accepted: list[AcceptedChange] = Field(default_factory=list)
    check_interval_minutes: int = Field(default=60, ge=1)  # fast re-check (metadata) between full ones
    auto_accept_package_updates: bool = True  # move the baseline for changes dpkg's md5sums explain


class AntivirusSection(_Section):
    scan_day: int = Field(default=5, ge=0, le=6)  # 5 = Saturday
    window_start: str = Field(default="10:00", pattern=r"^\d{2}:\d{2}$")
    window_end: str = Field(default="16:00", pattern=r"^\d{2}:\d{2}$")
    scan_paths: list[str] = Field(default_factory=lambda: ["/"])
    exclude: list[str] = Field(default_factory=lambda: ["/proc", "/sys", "/dev", "/run"])
    download_dirs: list[str] = Field(default_factory=lambda: ["/home/*/Downloads", "/tmp"])
    signature_max_age_days: int = 7
    scan_media: bool = True


class IdleSection(_Section):
    timeouts_s: dict[str, int] = Field(default_factory=lambda: {"student": 600, "teacher": 900})
    default_timeout_s: int = 900
    isuo_timeout_s: int = 120  # shorter during and after an ISUO session (000 §6.8)
    lock_on_isuo_end: bool = True


class IsuoSection(_Section):
    hosts: list[str] = Field(default_factory=lambda: ["emis.edu.gov.kg"])
    # Rooms where students work: ISUO used there outside a teacher's lesson is an incident
    # (the server's ISUO cross-checks, policy_server/checks; 002 §4.4, 000 §6.8).
    student_lab_rooms: list[str] = Field(default_factory=list)


class NetworkSection(_Section):
    gateway_ip: str | None = None
    gateway_macs: list[str] = Field(default_factory=list)
    dhcp_servers: list[str] = Field(default_factory=list)
    dns_resolvers: list[str] = Field(default_factory=list)
    # The school's IPv6 routers: link-local addresses and/or MACs.  Empty (most labs here are
    # IPv4 only): any Router Advertisement offering a default route is reported.
    ipv6_routers: list[str] = Field(default_factory=list)
    # Ports the proxy connects to (CONNECT targets, absolute URIs); everything else is refused.
    proxy_ports: list[int] = Field(default_factory=lambda: [80, 443])
    # What a group's programs may reach besides the proxy, DNS and DHCP (everything else is
    # refused by the workstation's firewall): "tcp/22", "tcp/22@10.0.0.5", "udp/1194@10.0.0.0/24".
    group_out: dict[str, list[str]] = Field(default_factory=dict)


class PolicyBundle(_Section):
    """The whole policy an agent enforces.  `version` grows by one on every change;
    `content_hash` is the SHA-256 of the canonical JSON of everything but itself."""

    protocol_version: int = PROTOCOL_VERSION
    version: int = 0
    content_hash: str = ""
    issued_at: AwareDatetime | None = None
    school: str = ""
    default_group: str = "student"
    groups: list[Group] = Field(
        default_factory=lambda: [
            Group(name="student", kind=GroupKind.student),
            Group(name="teacher", kind=GroupKind.teacher),
        ]
    )
    filtering: FilteringSection = Field(default_factory=FilteringSection)
    lessons: list[Lesson] = Field(default_factory=list)
    bans: list[Ban] = Field(default_factory=list)
    usb: UsbSection = Field(default_factory=UsbSection)
    integrity: IntegritySection = Field(default_factory=IntegritySection)
    antivirus: AntivirusSection = Field(default_factory=AntivirusSection)
    idle: IdleSection = Field(default_factory=IdleSection)
    isuo: IsuoSection = Field(default_factory=IsuoSection)
    network: NetworkSection = Field(default_factory=NetworkSection)

    def compute_hash(self) -> str:
        body = self.model_dump(mode="json", exclude={"content_hash", "issued_at"})
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def sealed(self) -> PolicyBundle:
        """A copy with `content_hash` filled in."""
        return self.model_copy(update={"content_hash": self.compute_hash()})

    def group_of(self, os_user: str | None, os_groups: list[str] | tuple[str, ...] = ()) -> str:
        """The group an OS user belongs to: listed by name first, then by OS group."""
        for group in self.groups:
            if os_user and os_user in group.os_users:
                return group.name
        for group in self.groups:
            if set(os_groups) & set(group.os_groups):
                return group.name
        return self.default_group


class PolicyPush(BaseModel):
    """What the push channel says: a newer version exists.  `bundle`, when present, is that
    version for the agent's room (the JSON GET /api/v1/policy would answer, `content_hash` its
    hash): the agent verifies and applies it without a second request.  Without it (a bundle
    too large to inline, an older server) the agent fetches with GET /api/v1/policy."""

    version: int
    content_hash: str
    bundle: dict[str, Any] | None = None
