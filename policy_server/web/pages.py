"""The request edge shared by every page: language, who is logged in, rendering.

Route handlers in `routes.py` stay thin: they ask `Page.for_request` for the
page's language and person, load data, and call `page.render(...)`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from policy_server.db.models import Person
from policy_server.web import i18n, presenters, templating

LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600
# Before login there is no session to hold a CSRF token, so the login form uses a
# double-submit cookie: a random value in a SameSite=Strict cookie and in the form.
LOGIN_CSRF_COOKIE = "kalkan_login_csrf"


def language_links(request: Request) -> dict[str, str]:
    """This page's URL in each language (the switcher keeps filters and page number)."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    links = {}
    for code in i18n.LANGUAGES:
        links[code] = f"{request.url.path}?{urlencode([*params, ('lang', code)])}"
    return links


def safe_next(url: str | None) -> str:
    """Only a path on this server (never '//evil.example' or 'https://…')."""
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/incidents"


@dataclass
class Page:
    request: Request
    language: str
    person: Person | None
    csrf_token: str | None

    @classmethod
    def for_request(cls, request: Request, person: Person | None, *, default_language: str | None = None
                    ) -> Page:
        language = i18n.negotiate_language(
            query=request.query_params.get("lang"),
            cookie=request.cookies.get(i18n.LANGUAGE_COOKIE),
            person=person.language if person else None,
            accept_language=request.headers.get("accept-language"),
            default=default_language or i18n.DEFAULT_LANGUAGE,
        )
        login = getattr(request.state, "login_session", None)
        return cls(request, language, person, login.csrf_token if login else None)

    @property
    def perms(self) -> presenters.Permissions:
        return presenters.permissions_for(self.person.role if self.person else "")

    def _(self, message: str, **params: object) -> str:
        return i18n.translate(self.language, message, **params)

    def render(self, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        base = {
            "person": self.person,
            "perms": self.perms,
            "role_name": presenters.ROLE_NAMES.get(self.person.role, self.person.role) if self.person else "",
            "csrf_token": self.csrf_token or "",
            "lang_links": language_links(self.request),
            "notice": None,
            "error": None,
            "section": "",
        }
        notice_count = getattr(self.request.app.state, "notice_count", None)  # (the app's own school)
        if notice_count is not None:
            base["notice_count"] = notice_count
        html = templating.render(self.language, template, **{**base, **context})
        response = HTMLResponse(html, status_code=status_code)
        self.remember_language(response)
        # Pages show personal data: never keep them in a shared browser's cache.  (The other
        # security headers, the CSP among them, come from policy_server/security/headers.py.)
        response.headers["Cache-Control"] = "no-store"
        return response

    def remember_language(self, response: Response) -> None:
        """A `?lang=` choice sticks (cookie) so the next page is in the same language."""
        if i18n.normalise_language(self.request.query_params.get("lang")):
            response.set_cookie(i18n.LANGUAGE_COOKIE, self.language, max_age=LANGUAGE_COOKIE_MAX_AGE,
                                samesite="lax", httponly=True, path="/")

    def error_page(self, status_code: int, message: str) -> HTMLResponse:
        titles = {403: i18n.N_("Not allowed"), 404: i18n.N_("Not found"), 422: i18n.N_("Cannot do that"),
                  409: i18n.N_("Cannot do that")}
        title = self._(titles.get(status_code, i18n.N_("Something went wrong")))
        return self.render("error.html", status_code=status_code, page_title=title, message=message)

    def login_redirect(self) -> RedirectResponse:
        target = self.request.url.path
        if self.request.url.query:
            target += "?" + self.request.url.query
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)
