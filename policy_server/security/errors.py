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
