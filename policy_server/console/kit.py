"""Shared pieces of the console pages that act (people, rooms, fleet, approvals, audit).

* `page_of(request, db)`: the `Page` (language, person, CSRF token) after `scope.allow` ran.
* `csrf_ok(page, token)`: the form's CSRF token is this login session's.
* `FormErrors`: GOV.UK-style error summary: a list of (field, message) shown at the top,
  each linking to its field, the same words beside the field, the person's input kept.
* `service_error(page, exc)`: a service's `KalkanError` in the reader's language.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from policy_server.errors import KalkanError, error_text, register_error_texts
from policy_server.web.i18n import N_
from policy_server.web.pages import Page


def page_of(request: Request, db: Session) -> Page:
    from policy_server.web import queries

    viewer = getattr(request.state, "viewer", None)
    person = viewer.person if viewer is not None else None
    return Page.for_request(request, person, default_language=queries.school_language(db))


def csrf_ok(page: Page, token: str | None) -> bool:
    return bool(page.csrf_token and token and hmac.compare_digest(page.csrf_token, token))


def csrf_refused(page: Page):
    return page.error_page(403, page._("The form's security token is missing or out of date. "
                                       "Go back, reload the page and try again."))


def redirect(path: str, **params: str | int | None) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return RedirectResponse(path + ("?" + query if query else ""), status_code=303)


# The console's own error codes (the shared ones are in policy_server/errors.py ERROR_TEXTS).
CONSOLE_ERROR_TEXTS = {
    "class.bad_name": N_("The class name %(name)s is not allowed: up to 32 letters, digits, "
                         "spaces, '.' or '-', e.g. 7-A."),
    "person.own_role": N_("You cannot change your own role. Ask another responsible person."),
    "person.own_disable": N_("You cannot disable your own account."),
    "person.unknown_room": N_("Rooms %(rooms)s do not exist. Choose rooms from the list."),
    "person.id_not_found": N_("There is no such person."),
    "person.wrong_current_password": N_(
        "The current password is wrong. Type the password you logged in with."),
    "person.passwords_differ": N_("The two new passwords differ. Type the same password twice."),
    "person.password_unchanged": N_("The new password must differ from the temporary one."),
    "room.bad_layout": N_("Rows and columns are whole numbers from 1 to %(maximum)s."),
    "room.seat_count": N_("This layout has %(needed)s seats but %(given)s names were given: "
                          "give one name per seat."),
    "room.bad_seat_name": N_("The seat name %(name)s is not allowed: Latin letters, digits, '.', '_' "
                             "or '-'."),
    "room.seat_twice": N_("These seat names appear twice: %(names)s. Each seat needs its own name."),
    "room.bad_name": N_("The room name %(name)s is not allowed: Latin letters, digits, spaces, '.', '_' "
                        "or '-'."),
    "room.duplicate": N_("A room named %(name)s exists already. Choose another name."),
    "room.not_found": N_("There is no such room."),
    "approval.bad_scope": N_("Choose whether to allow this device or this model."),
    "approval.no_event": N_("The event %(id)s does not exist (or is not of this kind). Reload the page."),
    "approval.nothing_chosen": N_("Choose at least one change to accept."),
}

register_error_texts(CONSOLE_ERROR_TEXTS)


def service_error(page: Page, exc: KalkanError) -> str:
    """The service's reason in the reader's language."""
    # on a page, the person's words in English too (the service's English is for scripts)
    text = CONSOLE_ERROR_TEXTS.get(exc.code or "") or error_text(exc.code)
    if text:
        try:
            return page._(text, **(exc.params or {}))
        except (KeyError, TypeError, ValueError):
            return page._(text.split("%(")[0])
    return exc.in_language(page.language)


@dataclass
class FormErrors:
    """Errors of one form: `add(field, message)`; `summary` for the top of the page."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, message: str) -> None:
        self.items.append((name, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def of(self, name: str) -> str | None:
        for field_name, message in self.items:
            if field_name == name:
                return message
        return None


def page_of_person(request: Request, db: Session, person) -> Page:
    from policy_server.web import queries

    return Page.for_request(request, person, default_language=queries.school_language(db))
