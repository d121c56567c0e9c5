"""Validation of a batch of agent events: fast for the whole batch, exact for each failure.

The exact check is `protocol.EventEnvelope` followed by the type's data model, one event
at a time; its messages are what an agent's operator reads.  Doing that for every event of
every batch costs two pydantic calls and a Python round-trip per event, so the whole batch
is first validated in one call of a `TypeAdapter` over a discriminated union of per-type
envelopes (the same envelope, with `data` typed by `type`).  Only when that call fails are
the events checked one by one, the exact way, so one bad event never blocks the others and
its message is the same as before.  The fast path only ever *accepts* what the exact path
would accept: its envelopes are subclasses of `EventEnvelope` with a narrower `data`.

Each event is also held to `protocol.MAX_EVENT_BYTES` (its JSON size), before any parsing
of its content, and refused alone when its text cannot be stored (NUL, a lone surrogate,
nesting deeper than `protocol.MAX_EVENT_DEPTH`): `encoding_problem`.  The validated `data`
is serialized to JSON here, once; that text is what the database stores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import Field, StringConstraints, TypeAdapter, ValidationError, create_model

from policy_server import protocol


@dataclass(slots=True)
class ValidEvent:
    """One event that passed validation, flattened to what is stored."""

    id: str
    type: str
    occurred_at: datetime  # aware, UTC
    os_user: str | None
    seat: str | None
    clauses: list[str]
    typed: protocol._Data  # the type's data model
    data_json: str  # `typed` as JSON: stored as is
    _data: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        """`typed` as plain JSON-able data (made on first use: only rules and side effects need it).

        Parsed back from `data_json` (the same serializer's output, so equal to
        `model_dump(mode="json")`): orjson's parse costs a fifth of pydantic's dump."""
        if self._data is None:
            self._data = orjson.loads(self.data_json)
        return self._data

    @property
    def clauses_json(self) -> str:
        return _clauses_json(tuple(self.clauses))


@cache
def _clauses_json(clauses: tuple[str, ...]) -> str:
    return orjson.dumps(list(clauses)).decode()


# A clause checked by pydantic's own (Rust) regex instead of `protocol._check_clause`, a Python
# call per clause.  Rust's `$` is end-of-text only (Python's also allows a final newline), so
# this is stricter, never looser; whatever it refuses gets the exact check and its message.
_FAST_CLAUSE = Annotated[str, StringConstraints(pattern=protocol._CLAUSE.pattern)]
_MAX_CLAUSES = next(m.max_length for m in protocol.EventEnvelope.model_fields["clauses"].metadata
                    if hasattr(m, "max_length"))


def _typed_envelope(event_type: str, model: type[protocol._Data]) -> type[protocol.EventEnvelope]:
    name = "Envelope_" + event_type.replace(".", "_")
    return create_model(name, __base__=protocol.EventEnvelope, type=(Literal[event_type], ...),
                        data=(model, ...),
                        clauses=(list[_FAST_CLAUSE], Field(default_factory=list, max_length=_MAX_CLAUSES)))


_ENVELOPES = tuple(_typed_envelope(t, model) for t, (model, _) in protocol.EVENT_TYPES.items())
_ANY_ENVELOPE = Annotated[Union[_ENVELOPES], Field(discriminator="type")]  # noqa: UP007 (a runtime tuple)
_BATCH = TypeAdapter(list[_ANY_ENVELOPE])
_ONE = TypeAdapter(_ANY_ENVELOPE)


def event_size(item: Any) -> int:
    """The event's size as compact JSON, in bytes."""
    try:
        return len(orjson.dumps(item))
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        return len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode())


def _too_big(index: int, item: dict, size: int) -> str:
    return (f"event #{index} ({item.get('type', 'no type')}) is {size} bytes; the limit is "
            f"{protocol.MAX_EVENT_BYTES} bytes per event: shorten its data (a long URL, comment or "
            "list) or split it into several events")


_NUL = b"\\u0000"  # how orjson writes the character NUL


def encoding_problem(item: dict, index: int) -> str | None:
    """Why the event cannot be stored as text, or None: too big, nested too deep, a lone
    surrogate (only `json`'s fallback parse lets one through), or NUL (PostgreSQL's text and
    jsonb cannot hold it).  One orjson serialization, which the size needs anyway."""
    try:
        dumped = orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError) as exc:
        return _unencodable(item, index, str(exc))
    if len(dumped) > protocol.MAX_EVENT_BYTES:
        return _too_big(index, item, len(dumped))
    if _NUL in dumped and _has_nul(item):
        return (f"event #{index} ({_type_of(item)}) contains the character NUL (\\u0000), which the "
                "database cannot store as text: remove it")
    return None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _type_of(item: dict) -> str:
    kind = item.get("type")
    return kind[:64] if isinstance(kind, str) else "no type"


def _unencodable(item: dict, index: int, reason: str) -> str | None:
    if "Recursion" in reason:
        return (f"event #{index} ({_type_of(item)}) is nested deeper than {protocol.MAX_EVENT_DEPTH} "
                "levels: send flat data")
    if "surrogate" in reason:
        return (f"event #{index} ({_type_of(item)}) contains an escaped lone surrogate (e.g. \\ud800), "
                "which is not Unicode text: send the text as valid UTF-8")
    try:  # an integer beyond 64 bits: measured the slow way, refused by the type's model
        size = len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode())
    except (ValueError, TypeError, RecursionError) as exc:
        return f"event #{index} ({_type_of(item)}) cannot be read as JSON text ({exc})"
    return _too_big(index, item, size) if size > protocol.MAX_EVENT_BYTES else None


def _canonical_id(envelope: protocol.EventEnvelope, raw: Any) -> str:
    """The event id as text: the agent's own string when it is already the canonical form
    (lowercase, dashes at 8-13-18-23: what `str(UUID)` gives; pydantic has checked it is a
    UUID), else `str(UUID)`, which costs ~1 µs per event."""
    if (type(raw) is str and len(raw) == 36 and raw[8] == raw[13] == raw[18] == raw[23] == "-"
            and raw == raw.lower()):
        return raw
    return str(envelope.id)


def _valid(envelope: protocol.EventEnvelope, typed: protocol._Data, raw_id: Any = None) -> ValidEvent:
    subject = envelope.subject
    clauses = envelope.clauses or list(protocol.EVENT_TYPES[envelope.type][1])
    return ValidEvent(
        id=_canonical_id(envelope, raw_id), type=envelope.type, occurred_at=envelope.occurred_at,
        os_user=subject.os_user if subject else None, seat=subject.seat if subject else None,
        clauses=clauses, typed=typed, data_json=typed.model_dump_json(),
    )


def validate_exactly(item: Any, index: int) -> ValidEvent | str:
    """The reference check of one event: a `ValidEvent`, or a message saying what is wrong."""
    if not isinstance(item, dict):
        return f"event #{index} is not a JSON object"
    try:
        envelope = protocol.EventEnvelope.model_validate(item)
        typed = envelope.typed_data()
    except protocol.UnknownEventType as exc:
        return str(exc)
    except ValidationError as exc:
        return f"event #{index} ({item.get('type', 'no type')}): {protocol.validation_message(exc)}"
    return _valid(envelope, typed, item.get("id"))


def _validate_one(item: dict, index: int) -> ValidEvent | str:
    try:
        envelope = _ONE.validate_python(item)
    except ValidationError:
        return validate_exactly(item, index)
    return _valid(envelope, envelope.data, item.get("id"))


def validate_batch(items: list[Any]) -> list[ValidEvent | str]:
    """For each item, in order: a `ValidEvent` or the message that rejects it."""
    out: list[ValidEvent | str | None] = [None] * len(items)
    candidates: list[int] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            out[index] = f"event #{index} is not a JSON object"
        elif (problem := encoding_problem(item, index)) is not None:
            out[index] = problem
        else:
            candidates.append(index)
    try:
        envelopes = _BATCH.validate_python([items[i] for i in candidates])
    except ValidationError:  # at least one is bad: check each on its own
        for index in candidates:
            out[index] = _validate_one(items[index], index)
    else:
        for index, envelope in zip(candidates, envelopes, strict=True):
            out[index] = _valid(envelope, envelope.data, items[index].get("id"))
    return out  # type: ignore[return-value]
