"""A page's answer to a request the routes' bounds refuse (422): the error page in the
reader's language naming the fields, not the API's JSON (docs/security.md "Input bounds")."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from policy_server.web.i18n import N_

BAD_ADDRESS = N_("This address is not valid (%(fields)s). Go back and follow a link on the page.")


def validation_error_page(request: Request, fields: list[str]) -> Response:
    from policy_server.people import auth
    from policy_server.web import queries
    from policy_server.web.pages import Page

    with request.app.state.sessionmaker() as db:
        page = Page.for_request(request, auth.optional_person(request, db),
                                default_language=queries.school_language(db))
        return page.error_page(422, page._(BAD_ADDRESS, fields=", ".join(fields) or "?"))
