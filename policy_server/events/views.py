"""`POST /api/v1/events`: an agent's batch of events."""

from __future__ import annotations

import json
import re
import time
from itertools import accumulate

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from policy_server import protocol, scope
from policy_server.agents.auth import authenticate_agent, bearer_token
from policy_server.errors import KalkanError
from policy_server.events.ingest import check_batch, store_isolating
from policy_server.operations.metrics import record_batch

router = APIRouter(prefix="/api/v1", tags=["events"])

_TOO_BIG = (f"the batch is larger than {protocol.MAX_BATCH_BYTES} bytes; send at most "
            f"{protocol.MAX_EVENTS_PER_BATCH} events and {protocol.MAX_BATCH_BYTES // 1024} KiB per batch")


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > protocol.MAX_BATCH_BYTES:
        raise HTTPException(413, _TOO_BIG)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > protocol.MAX_BATCH_BYTES:
            raise HTTPException(413, _TOO_BIG)
    return bytes(body)


def _loads(body: bytes):
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise _too_deep() from None
    # What orjson refuses but `json` reads (integers beyond 64 bits, escaped lone surrogates:
    # the events holding them are refused one by one in validation); its depth bounded first.
    if json_depth(body) > protocol.MAX_JSON_DEPTH:
        raise _too_deep()
    try:
        return json.loads(body)
    except RecursionError:
        raise _too_deep() from None


def _too_deep() -> HTTPException:
    return HTTPException(400, f"the body is nested deeper than {protocol.MAX_JSON_DEPTH} levels; "
                              "events are flat objects: send {\"events\": [ … ]}")


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (outside its strings); for a
    text that is not JSON, some number.  Linear, and without recursion."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS).translate(_BRACKETS)
    return max(accumulate(1 if b == 1 else -1 for b in brackets), default=0)


def parse_batch(body: bytes) -> list:
    try:
        parsed = _loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"the body is not valid JSON ({exc}); send {{\"events\": [ … ]}}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("events"), list):
        raise HTTPException(422, 'the body must be a JSON object {"events": [event, …]}')
    if extra := set(parsed) - {"events"}:
        raise HTTPException(422, f"unknown fields in the batch: {', '.join(sorted(extra))}; "
                                 'send only {"events": [...]}')
    events = parsed["events"]
    if len(events) > protocol.MAX_EVENTS_PER_BATCH:
        raise HTTPException(413, f"the batch has {len(events)} events; the limit is "
                                 f"{protocol.MAX_EVENTS_PER_BATCH}: split it into smaller batches")
    return events


def _inline_refs(schema: dict) -> dict:
    """The schema with its `$defs` written in place (the OpenAPI document has no `$defs`)."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def events_body_schema() -> dict:
    """The body of `POST /api/v1/events` for the OpenAPI document (the route reads the raw
    body itself: one bad event is refused alone, so the batch is not validated as a whole)."""
    envelope = _inline_refs(protocol.EventEnvelope.model_json_schema())
    envelope["properties"]["type"] = {"type": "string", "enum": sorted(protocol.EVENT_TYPES),
                                      "description": "a known event type; `data` is its model"}
    return {"type": "object", "required": ["events"], "additionalProperties": False,
            "properties": {"events": {"type": "array", "maxItems": protocol.MAX_EVENTS_PER_BATCH,
                                      "items": envelope}}}


@router.post("/events", response_model=protocol.BatchResult, dependencies=[Depends(scope.agent_only)],
             openapi_extra={
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": events_body_schema()}}}})
async def post_events(request: Request) -> Response:
    # The body is read before any database transaction starts: on SQLite every transaction
    # holds the write lock, which must never wait on a slow client's upload.
    began = time.perf_counter()
    try:
        return await _post_events(request, began)
    except HTTPException as exc:  # counted for /metrics (policy_server/operations/metrics.py)
        record_batch(request.app.state.metrics, time.perf_counter() - began, status=exc.status_code)
        raise
    except KalkanError as exc:
        record_batch(request.app.state.metrics, time.perf_counter() - began, status=exc.status_code)
        raise


async def _post_events(request: Request, began: float) -> Response:
    token = bearer_token(request)
    body = await _read_body(request)
    sessionmaker = request.app.state.sessionmaker
    metrics = request.app.state.metrics  # this school's counters (policy_server/operations/metrics.py)

    def work() -> bytes:
        agent_id = authenticate_agent(sessionmaker, token).id  # 401 before looking at the content
        # Parsed and validated before the write transaction: on SQLite it holds the one write
        # lock, so concurrent uploads validate while another batch is being stored.
        checked = check_batch(parse_batch(body))
        result = store_isolating(sessionmaker, agent_id=agent_id, checked=checked)
        record_batch(metrics, time.perf_counter() - began, accepted=len(result.accepted),
                     duplicates=len(result.duplicates), rejected=len(result.rejected))
        return orjson.dumps(result.model_dump())  # already a BatchResult: no second validation

    return Response(await run_in_threadpool(work), media_type="application/json")
