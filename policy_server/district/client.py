"""The school side: enrol at the district, send the kept weeks' aggregates (signed), retry.

Sending is idempotent (the district stores a school's week once and answers "duplicate"),
so a school that was offline simply sends everything not yet accepted on the next round.
"""

from __future__ import annotations

import ssl
from datetime import datetime

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import utcnow
from policy_server.district import signing
from policy_server.errors import InvalidInput
from policy_server.summaries.models import DistrictLink, WeeklyReport

TIMEOUT_S = 10.0


def _client(url: str, fingerprint: str | None) -> httpx.Client:
    if url.startswith("http://") or not fingerprint:
        return httpx.Client(base_url=url, timeout=TIMEOUT_S)
    # Pin the district's certificate like an agent pins the school's (checked after the handshake).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = httpx.Client(base_url=url, timeout=TIMEOUT_S, verify=context)

    def check(response: httpx.Response) -> None:
        import hashlib

        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if der is None or hashlib.sha256(der).hexdigest() != fingerprint.lower().replace(":", ""):
            raise httpx.ConnectError(
                "the district server's certificate does not match the pinned fingerprint"
            )

    client.event_hooks["response"] = [check]
    return client


def link(db: Session) -> DistrictLink | None:
    return db.scalar(select(DistrictLink).limit(1))


def enroll(db: Session, *, url: str, code: str, fingerprint: str | None = None) -> DistrictLink:
    if link(db) is not None:
        raise InvalidInput("this school is already enrolled at a district", code="district.already")
    private, public = signing.new_key()
    with _client(url, fingerprint) as client:
        r = client.post("/api/v1/district/enroll", json={"code": code, "public_key": public})
    if r.status_code != 200:
        raise InvalidInput(
            f"the district refused the enrolment: {r.json().get('detail', r.text)}", code="district.refused"
        )
    row = DistrictLink(
        url=url.rstrip("/"), fingerprint=fingerprint, school_id=r.json()["school_id"], private_key=private
    )
    db.add(row)
    audit(db, actor="system", action="district.enrolled", target=url)
    db.flush()
    return row


def send_pending(db: Session, *, now: datetime | None = None) -> dict[str, str]:
    """Send every kept week the district has not accepted, oldest first; {period: outcome}."""
    now = now or utcnow()
    found = link(db)
    if found is None:
        return {}
    pending = list(
        db.scalars(
            select(WeeklyReport).where(WeeklyReport.sent_at.is_(None)).order_by(WeeklyReport.starts_at)
        )
    )
    outcome: dict[str, str] = {}
    if not pending:
        return outcome
    try:
        with _client(found.url, found.fingerprint) as client:
            for report in pending:
                report.send_attempts += 1
                body = {
                    "school_id": found.school_id,
                    "period": report.period,
                    "aggregates": report.aggregates,
                    "signature": signing.sign(
                        found.private_key,
                        signing.canonical(found.school_id, report.period, report.aggregates),
                    ),
                }
                r = client.post("/api/v1/district/weeks", json=body)
                if r.status_code == 200:
                    report.sent_at, report.send_error = now, None
                    outcome[report.period] = r.json()["status"]
                else:
                    report.send_error = f"{r.status_code}: {r.text[:300]}"
                    outcome[report.period] = "refused"
                db.commit()
    except httpx.HTTPError as exc:  # the district is away: try again next round
        for report in pending:
            if report.period not in outcome:
                report.send_error = f"district unreachable: {exc}"[:300]
                outcome[report.period] = "unreachable"
        db.commit()
    return outcome
