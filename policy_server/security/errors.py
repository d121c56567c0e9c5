"""Answers to input the routes refuse (docs/security.md "Input bounds"): on a page, the
error page in the reader's language naming the fields (not the API's JSON); and the safety
net for numbers past the database's range in routes without bounds (422, never 500)."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError

from policy_server.scope import MAX_ID
from policy_server.web.i18n import N_

log = logging.getLogger("kalkan.security")

BAD_ADDRESS = N_("This address is not valid (%(fields)s). Go back and follow a link on the page.")

# A POST form with a value the route refuses: one line per field, naming it and the fix.
FORM_PROBLEM_TITLE = N_("The form has a value that cannot be used")
FORM_PROBLEMS = {
    "int": N_("%(field)s: enter a whole number, e.g. 12."),
    "float": N_("%(field)s: enter a number, e.g. 1.5."),
    "at_least": N_("%(field)s: enter %(limit)s or more."),
    "at_most": N_("%(field)s: enter %(limit)s or less."),
    "too_long": N_("%(field)s is too long: shorten it to at most %(limit)s characters."),
    "too_short": N_("%(field)s is too short: write at least %(limit)s characters."),
    "missing": N_("%(field)s is missing: fill it in."),
    "choice": N_("%(field)s: choose one of the offered values."),
    "other": N_("%(field)s: this value cannot be used; correct it and send the form again."),
}
# Form fields by their name on the wire -> what the page calls them (others: the name itself).
FIELD_NAMES = {
    "assignee_id": N_("Assignee"), "user_id": N_("Person"), "reason": N_("Reason"), "note": N_("Note"),
    "minutes": N_("Minutes"), "seconds": N_("Seconds"), "csrf_token": N_("Form token"),
    "decision": N_("Decision"), "username": N_("Username"), "password": N_("Password"),
    "incident_id": N_("Incident number"), "room_id": N_("Room"),
}
_KINDS = {"int_parsing": "int", "int_type": "int", "int_from_float": "int", "float_parsing": "float",
          "float_type": "float", "greater_than_equal": "at_least", "greater_than": "at_least",
          "less_than_equal": "at_most", "less_than": "at_most", "string_too_long": "too_long",
          "too_long": "too_long", "string_too_short": "too_short", "too_short": "too_short",
          "missing": "missing", "enum": "choice", "literal_error": "choice"}
_LIMITS = ("max_length", "min_length", "ge", "gt", "le", "lt")


def form_problems(errors: list[dict]) -> list[tuple[str, str, dict]]:
    """(field, kind, params) per refused value, from pydantic's errors (loc, type, ctx)."""
    problems = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = loc[-1] if loc else "?"
        kind = _KINDS.get(str(err.get("type", "")), "other")
        ctx = err.get("ctx") or {}
        limit = next((ctx[k] for k in _LIMITS if k in ctx), None)
        if limit is None and kind in ("at_least", "at_most", "too_long", "too_short"):
            kind = "other"
        problems.append((field, kind, {"limit": limit}))
    return problems


def form_error_page(request: Request, errors: list[dict]) -> Response:
    """The console's error page for a form the route refused (422), in the reader's
    language: a GOV.UK-style summary naming each field and the fix, and the way back."""
    from urllib.parse import urlsplit

    from policy_server.people import auth
    from policy_server.web import queries
    from policy_server.web.pages import Page

    with request.app.state.sessionmaker() as db:
        page = Page.for_request(request, auth.optional_person(request, db),
                                default_language=queries.school_language(db))
        lines = []
        for field, kind, params in form_problems(errors):
            name = page._(FIELD_NAMES[field]) if field in FIELD_NAMES else field
            lines.append(page._(FORM_PROBLEMS[kind], field=name, **params))
        referer = urlsplit(request.headers.get("referer", ""))
        same_site = not referer.netloc or referer.netloc == request.url.netloc
        back = (referer.path + (f"?{referer.query}" if referer.query else "")) \
            if same_site and referer.path.startswith("/") and not referer.path.startswith("//") else "/"
        return page.render("security/form_error.html", status_code=422, page_title=page._(FORM_PROBLEM_TITLE),
                           problems=lines, back=back)


def validation_error_page(request: Request, fields: list[str]) -> Response:
    from policy_server.people import auth
    from policy_server.web import queries
    from policy_server.web.pages import Page

    with request.app.state.sessionmaker() as db:
        page = Page.for_request(request, auth.optional_person(request, db),
                                default_language=queries.school_language(db))
        return page.error_page(422, page._(BAD_ADDRESS, fields=", ".join(fields) or "?"))


def _out_of_range_fields(request: Request) -> list[str]:
    """The path and query parameters holding whole numbers the database cannot store."""
    fields = []
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        text = str(value).strip()
        if text.lstrip("+-").isdigit() and not -MAX_ID - 1 <= int(text) <= MAX_ID:
            fields.append(name)
    return fields


def install_input_errors(app) -> None:
    """No 5xx from a number past the database's range in a route without bounds in its
    signature (a safety net: routes should bound their ids with `scope.MAX_ID`, giving the
    usual 422).  SQLite raises OverflowError, PostgreSQL a DataError ("integer out of range");
    both become 422 naming the field — the error page on a page, JSON on the API."""

    async def out_of_range(request: Request, exc: Exception) -> Response:
        fields = _out_of_range_fields(request) or ["?"]
        log.info("input out of the database's range: %s %s (%s)", request.method, request.url.path,
                 type(exc).__name__)
        path = request.url.path
        if not (path.startswith("/api/") or path.endswith(".json")):
            return await run_in_threadpool(validation_error_page, request, fields)
        detail = ("the request is not valid: " + "; ".join(
            f"{name}: a whole number between 1 and {MAX_ID} is expected" for name in fields))
        return JSONResponse({"detail": detail, "code": "request.out_of_range"}, status_code=422)

    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(DataError, out_of_range)
