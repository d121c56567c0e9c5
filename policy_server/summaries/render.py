"""The summary as HTML (console and PDF), CSV tables and SVG charts, drawn on the server.

Everything reads the summary's dict form (`Summary.as_dict`, what `WeeklyReport.summary`
keeps), so a kept week renders the same in every language and format, years later.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from markupsafe import Markup

from filters import categories
from policy_server.web import templating
from policy_server.web.i18n import N_, format_datetime, translate
from reports.data import DEFAULT_TZ

CONTROL_NAMES = {
    "agent_reporting": N_("Agent reporting every school day"),
    "av_full_scan": N_("Antivirus full scan within 7 days, with proof"),
    "av_signatures": N_("Antivirus signatures fresh"),
    "integrity": N_("Software integrity clean or changes approved"),
    "usb": N_("USB policy enforced"),
    "idle_lock": N_("Idle lock working"),
    "filter": N_("Web filter running with the current policy"),
    "backups": N_("Server backups made and checked"),
    "seats_reported": N_("Seats that reported"),
}
STATE_NAMES = {"good": N_("Good"), "attention": N_("Needs attention"), "failing": N_("Not compliant")}
SEVERITY_NAMES = {"critical": N_("Critical"), "high": N_("High"), "medium": N_("Medium"), "low": N_("Low")}
ISUO_NAMES = {
    "isuo.storage": N_("Storage device during an ISUO session"),
    "isuo.unlocked": N_("ISUO session not followed by a lock"),
    "isuo.student_lab": N_("ISUO used from a student lab"),
}
TABLES = ("controls", "failing_seats", "incidents", "blocked", "queue", "trend")
# the CSV links' words on the page (the file names stay the codes above)
TABLE_LINKS = {
    "controls": N_("CSV: controls"),
    "failing_seats": N_("CSV: failing seats"),
    "incidents": N_("CSV: incidents"),
    "blocked": N_("CSV: blocked attempts"),
    "queue": N_("CSV: reports"),
    "trend": N_("CSV: last weeks"),
}
STATE_COLOURS = {"good": "#1d7044", "attention": "#b06d00", "failing": "#b3261e"}


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{round(100 * rate)}\u00a0%"


def trend_svg(trend: list[dict], *, title: str) -> Markup:
    """Scores (0–100) of the weeks, oldest first, as a small bar chart."""
    width, height, gap = 260, 70, 6
    n = max(len(trend), 1)
    bar = (width - gap * (n + 1)) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 16}" width="{width}" '
        f'height="{height + 16}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, point in enumerate(trend):
        score = point.get("score")
        x = gap + i * (bar + gap)
        h = 0 if score is None else max(2, height * score / 100)
        colour = STATE_COLOURS.get(point.get("state"), "#777")
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}"/>'
        )
        label = "—" if score is None else str(score)
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{max(10, height - h - 2):.1f}" font-size="9" '
            f'text-anchor="middle" fill="#111">{label}</text>'
        )
        week = str(point.get("period", ""))[-3:]
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{height + 12}" font-size="9" text-anchor="middle" '
            f'fill="#333">{escape(week)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def rate_svg(passed: int, total: int) -> Markup:
    """A 100 px bar: the share of seats passing."""
    share = passed / total if total else 0
    colour = STATE_COLOURS["good" if share >= 0.95 else "attention" if share >= 0.8 else "failing"]
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="10" viewBox="0 0 100 10" '
        f'aria-hidden="true"><rect width="100" height="10" fill="#e3e3e3"/>'
        f'<rect width="{100 * share:.1f}" height="10" fill="{colour if total else "#e3e3e3"}"/></svg>'
    )


def category_name(category: str, language: str) -> str:
    if category == "other":
        return translate(language, "other categories")
    return categories.names([category], language)[0]


def blocked_rows(summary: dict) -> list[tuple[str, int]]:
    """Most attempts first (a kept summary's JSON may come back with its keys sorted)."""
    return sorted(summary["blocked"].items(), key=lambda kv: (-kv[1], kv[0]))


def incident_rows(summary: dict) -> list[tuple[str, dict]]:
    return [(sev, summary["incidents"][sev]) for sev in SEVERITY_NAMES if sev in summary["incidents"]]


def context(summary: dict, language: str) -> dict:
    def _(message: str, **params) -> str:
        return translate(language, message, **params)

    regressed = {r["key"]: r for r in summary.get("regressions", [])}
    controls = []
    for c in summary["controls"]:
        controls.append(
            {
                **c,
                "name": _(CONTROL_NAMES.get(c["key"], c["key"])),
                "rate": percent(c["passed"] / c["total"] if c["total"] else None),
                "bar": rate_svg(c["passed"], c["total"]),
                "regressed": regressed.get(c["key"]),
            }
        )
    top_blocked = blocked_rows(summary)
    zone = ZoneInfo(summary.get("tz") or DEFAULT_TZ)
    start = datetime.fromisoformat(summary["start"]).astimezone(zone)
    end = datetime.fromisoformat(summary["end"]).astimezone(zone) - timedelta(seconds=1)
    made = datetime.fromisoformat(summary["made_at"]) if summary.get("made_at") else None
    return {
        "first_day": start.date().isoformat(),
        "last_day": end.date().isoformat(),
        "made_at": format_datetime(made, language) if made else "—",
        "state_names": {k: _(v) for k, v in STATE_NAMES.items()},
        "s": summary,
        "controls": controls,
        "state_name": _(STATE_NAMES.get(summary["state"], summary["state"])),
        "reported_rate": percent(
            summary["reported"]["passed"] / summary["reported"]["total"]
            if summary["reported"]["total"]
            else None
        ),
        "trend_chart": trend_svg(summary["trend"], title=_("Score of the last weeks")),
        "severity_names": {k: _(v) for k, v in SEVERITY_NAMES.items()},
        "isuo_names": {k: _(v) for k, v in ISUO_NAMES.items()},
        "blocked_total": sum(summary["blocked"].values()),
        "blocked_top": [(category_name(c, language), n) for c, n in top_blocked[:6]],
        "blocked_all": [(category_name(c, language), n) for c, n in top_blocked],
        "incident_rows": incident_rows(summary),
        "blocked_rest": sum(v for _k, v in top_blocked[6:]),
        "control_names": {k: _(v) for k, v in CONTROL_NAMES.items()},
    }


def document_html(summary: dict, language: str) -> str:
    """A standalone A4 document (summary page + appendix) for the PDF."""
    return templating.render(language, "summaries/document.html", **context(summary, language))


def pdf(summary: dict, language: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=document_html(summary, language)).write_pdf()


def csv_table(summary: dict, table: str, language: str) -> str:
    """One table of the summary as CSV (UTF-8; the first row names the columns)."""
    if table not in TABLES:
        raise KeyError(table)
    out = io.StringIO()
    w = csv.writer(out)
    if table == "controls":
        w.writerow(["control", "clauses", "passed", "total", "rate"])
        for c in [summary["reported"], *summary["controls"]]:
            w.writerow(
                [
                    c["key"],
                    " ".join(c["clauses"]),
                    c["passed"],
                    c["total"],
                    "" if not c["total"] else f"{c['passed'] / c['total']:.3f}",
                ]
            )
    elif table == "failing_seats":
        w.writerow(["control", "seat"])
        for c in summary["controls"]:
            for seat in c["failing"]:
                w.writerow([c["key"], seat])
    elif table == "incidents":
        w.writerow(["severity", "opened", "resolved", "open", "median_hours_to_resolve"])
        for sev, f in incident_rows(summary):
            w.writerow(
                [
                    sev,
                    f["opened"],
                    f["resolved"],
                    f["open"],
                    "" if f["median_hours"] is None else f["median_hours"],
                ]
            )
    elif table == "blocked":
        w.writerow(["category", "attempts"])
        for cat, n in blocked_rows(summary):
            w.writerow([cat, n])
    elif table == "queue":
        w.writerow(["figure", "value"])
        for k in ("received", "decided", "median_hours", "open_over_48h"):
            w.writerow([k, "" if summary["queue"][k] is None else summary["queue"][k]])
        for k, v in summary["lessons"].items():
            w.writerow([f"lessons_{k}", v])
        for k, v in summary["isuo"].items():
            w.writerow([k, v])
    elif table == "trend":
        w.writerow(["period", "state", "score"])
        for t in summary["trend"]:
            w.writerow([t["period"], t["state"], "" if t["score"] is None else t["score"]])
    return out.getvalue()
