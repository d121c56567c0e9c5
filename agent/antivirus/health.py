"""Is the antivirus working?  (000 §5.4: monitor that the antivirus works.)

`assess` is pure: from what clamd answered (or the error) and the time, it makes
the `av.health` event data.  Problems are short stable codes the server's
rules and the web pages translate:

    clamd_missing      clamd is not installed / its socket does not exist
    clamd_unreachable  the socket exists but clamd does not answer
    signatures_unknown clamd answers but reports no signature database version
    signatures_stale   the signatures are older than the policy's limit (default 7 days)
"""

from __future__ import annotations

from datetime import datetime

from agent.antivirus.clamd import ClamdVersion
from policy_server.protocol import AvHealth

CLAMD_MISSING = "clamd_missing"
CLAMD_UNREACHABLE = "clamd_unreachable"
SIGNATURES_UNKNOWN = "signatures_unknown"
SIGNATURES_STALE = "signatures_stale"


def assess(version: ClamdVersion | None, *, now: datetime, max_age_days: int,
           socket_exists: bool = True) -> AvHealth:
    if version is None:
        return AvHealth(clamd_reachable=False, problem=CLAMD_UNREACHABLE if socket_exists else CLAMD_MISSING)
    if version.signature_date is None:
        return AvHealth(clamd_reachable=True, signature_version=version.signature_version,
                        problem=SIGNATURES_UNKNOWN)
    age_days = (now - version.signature_date).total_seconds() / 86400
    return AvHealth(
        clamd_reachable=True,
        signature_version=version.signature_version,
        signature_date=version.signature_date,
        signature_age_days=round(age_days, 2),
        problem=SIGNATURES_STALE if age_days > max_age_days else None,
    )
