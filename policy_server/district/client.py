"""The school side: enrol at the district, send the kept weeks' aggregates (signed), retry.

Sending is idempotent (the district stores a school's week once and answers "duplicate"),
so a school that was offline simply sends everything not yet accepted on the next round.
"""

from __future__ import annotations

import hashlib
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


def _pinned_context(fingerprint: str) -> ssl.SSLContext:
    """Trust exactly the district certificate with this SHA-256, checked during the handshake
    (before the enrolment code or a week is sent), as an agent pins its school (agent/tls.py)."""
    expected = fingerprint.lower().replace(":", "").strip()

    def check(der: bytes | None) -> None:
        if der is None or hashlib.sha256(der).hexdigest() != expected:
            raise ssl.SSLCertVerificationError(
                "the district server's certificate does not match the pinned fingerprint (--fingerprint)"
            )

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            check(self.getpeercert(binary_form=True))

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            check(self.getpeercert(binary_form=True))

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin replaces the chain: a school CA, no public one
    context.sslobject_class = PinnedObject
    context.sslsocket_class = PinnedSocket
    return context


def _client(url: str, fingerprint: str | None) -> httpx.Client:
    if url.startswith("http://") or not fingerprint:
        return httpx.Client(base_url=url, timeout=TIMEOUT_S)
    return httpx.Client(base_url=url, timeout=TIMEOUT_S, verify=_pinned_context(fingerprint))


def link(db: Session) -> DistrictLink | None:
    return db.scalar(select(DistrictLink).limit(1))


def enroll(db: Session, *, url: str, code: str, fingerprint: str | None = None) -> DistrictLink:
    if link(db) is not None:
        raise InvalidInput("this school is already enrolled at a district", code="district.already")
    private, public = signing.new_key()
    with _client(url, fingerprint) as client:
        r = client.post("/api/v1/district/enroll", json={"code": code, "public_key": public})
    if r.status_code != 200:
        reason = (
            r.json().get("detail", r.text)
            if r.headers.get("content-type", "").startswith("application/json")
            else r.text[:300]
        )
        raise InvalidInput(
            f"the district refused the enrolment: {reason}",
            code="district.refused",
            params={"reason": reason},
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
