"""Incident rules for the filtering proxy's events (000 §8, 001 §2.7, §3.4).

Pure functions: event in, draft (or None) out.  Dedup keys decide what joins one incident:
* `web.report` — one incident per reported URL per day, for the responsible person (000 §8.3);
* `web.blocked` — repeated attempts, not a single mistyped link: the incident opens at the
  5th refused page by one seat + OS user within 10 minutes (counted across batches, the
  earlier four join it), holds every further attempt of its 10-minute window, and the class
  teacher is told (001 §2.7: deliberate attempts);
* `web.alert` — per seat + user per 10 minutes; self-harm lists make it high (000 §8.1);
* `web.unblock_request` — one per URL host per day.

Titles, params and keys carry no OS user name and no URL (only the host): see
`policy_server.rules` "personal data".
"""

from __future__ import annotations

from urllib.parse import urlsplit

from policy_server.rules import IncidentDraft, RuleInput, Severity, digest, pseudonym, rule

DAY_S = 24 * 3600
BLOCKED_WINDOW_S = 10 * 60
BLOCKED_OPEN_AFTER = 5  # attempts inside BLOCKED_WINDOW_S before it is an incident (001 §2.7)
SELF_HARM_LISTS = {"self-harm", "selfharm", "suicide", "self_harm"}


def _host(url: str) -> str:
    try:
        return (urlsplit(url if "//" in url else f"http://{url}").hostname or url).lower()
    except ValueError:
        return url.lower()


def _who(event: RuleInput) -> str:
    return f"{event.agent_id}:{pseudonym(event.os_user)}"


def _report_key(url: str) -> str:
    try:
        parts = urlsplit(url if "//" in url else f"http://{url}")
        return digest(f"{(parts.hostname or '').lower()}{parts.path.rstrip('/')}")
    except ValueError:
        return digest(url)


@rule("web.report")
def url_reported(event: RuleInput) -> IncidentDraft:
    url = event.data["url"]
    return IncidentDraft(
        rule="web.report",
        title=f"Bad page reported on {_host(url)[:200]}",
        severity=Severity.medium,
        clauses=("000 §8.3", "001 §3.4"),
        dedup_key=f"web.report:{_report_key(url)}",
        window_s=DAY_S,
        # the URL and the comment stay in the event: the reader's view adds the URL
        params={"host": _host(url)},
        notify=("admin",),
    )


@rule("web.blocked")
def repeated_blocked_attempts(event: RuleInput) -> IncidentDraft:
    data = event.data
    host = data.get("host") or _host(data.get("url", ""))
    return IncidentDraft(
        rule="web.blocked",
        title=f"Blocked pages requested at {event.seat or event.hostname or 'a workstation'}",
        severity=Severity.low,
        clauses=("000 §8.1", "001 §3.3", "001 §2.7"),
        dedup_key=f"web.blocked:{_who(event)}",
        window_s=BLOCKED_WINDOW_S,
        params={"host": host, "categories": list(data.get("categories") or []),
                "group": data.get("group") or None},
        notify=("class_teacher",),
        open_after=BLOCKED_OPEN_AFTER,
    )


@rule("web.alert")
def phrase_alert(event: RuleInput) -> IncidentDraft:
    data = event.data
    lists = {name.lower() for name in data.get("lists") or []}
    self_harm = bool(lists & SELF_HARM_LISTS)
    return IncidentDraft(
        rule="web.alert",
        title=("Search or page about self-harm" if self_harm else "Search or page over the alert threshold"),
        severity=Severity.high if self_harm else Severity.medium,
        clauses=("000 §8.1", "000 §8.2", "001 §2.12"),
        dedup_key=f"web.alert:{_who(event)}:{'self-harm' if self_harm else 'other'}",
        window_s=BLOCKED_WINDOW_S,
        params={"engine": data.get("engine", ""), "score": data.get("score"), "lists": sorted(lists),
                "self_harm": self_harm},
        notify=("admin",),
    )


@rule("web.unblock_request")
def unblock_requested(event: RuleInput) -> IncidentDraft:
    url = event.data.get("url", "")
    return IncidentDraft(
        rule="web.unblock_request",
        title=f"Request to unblock {_host(url)}",
        severity=Severity.low,
        clauses=("001 §2.6",),
        dedup_key=f"web.unblock_request:{_host(url)}",
        window_s=DAY_S,
        params={"host": _host(url), "categories": list(event.data.get("categories") or [])},
    )
