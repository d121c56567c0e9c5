"""Error texts of the reports' codes (summaries and district), registered at import."""

from __future__ import annotations

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

REPORT_ERROR_TEXTS = {
    "summaries.week": N_("%(text)s is not a week of the calendar; write it as YEAR-Www, e.g. 2026-W49."),
    "summaries.range": N_("The range ends before it starts; give the first day, then the last."),
    "summaries.running_week": N_("Week %(week)s is not over yet; a weekly summary is made after its Sunday."),
    "district.name": N_("The school needs a name."),
    "district.bad_code": N_(
        "The district enrolment code is unknown, used or expired; ask the district office for a new one."
    ),
    "district.bad_key": N_("The public key must be a PEM public key."),
    "district.unknown_school": N_("This school is not enrolled at the district."),
    "district.period": N_("The period must be an ISO week like 2026-W49."),
    "district.bad_signature": N_("The signature does not match the school's key."),
    "district.not_here": N_("This server is a school server, not a district server."),
    "district.already": N_("This school is already enrolled at a district."),
    "district.refused": N_("The district refused the enrolment: %(reason)s"),
}

register_error_texts(REPORT_ERROR_TEXTS)
