"""Errors the service layer raises; the API and the CLI turn them into messages for a person.

Every message names the problem and, where there is one, the fix: it is shown to a person.

The service raises with English text (what scripts, logs and the agent read) plus, where a
person may meet the error, a stable `code` and the `params` the text was built from.
`ERROR_TEXTS` maps a code to an English message id of the Babel catalogs
(policy_server/web/locale); `KalkanError.in_language("ru")` fills it in Russian.  An error
without a code, or whose code has no text here, stays in its English words.

    raise Conflict(f"a person with username {username!r} already exists; …",
                   code="person.duplicate_username", params={"username": username})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from policy_server.web.i18n import N_

# code -> message id (English, `%(name)s` placeholders filled from the error's params).
ERROR_TEXTS: Final[Mapping[str, str]] = {
    # enrolment and agent tokens
    "enroll.protocol_unsupported": N_(
        "This agent speaks protocol version %(version)s; the server supports %(supported)s. "
        "Update the agent or the server."),
    "enroll.unknown_code": N_(
        "This enrolment code is not known. Check for typing mistakes, or ask the responsible person "
        "for a new code (kalkan-server enrollment-code)."),
    "enroll.code_expired": N_(
        "This enrolment code expired on %(expired)s UTC. Ask the responsible person for a new code."),
    "enroll.code_used_up": N_(
        "This enrolment code has been used up. Ask the responsible person for a new code "
        "(kalkan-server enrollment-code --uses N for several seats)."),
    "agent.token_missing": N_(
        "Missing agent token: send 'Authorization: Bearer <token>' from enrolment."),
    "agent.token_unknown": N_(
        "This agent token is unknown or was revoked. Enrol the workstation again with kalkan-agent enroll."),
    "agent.not_found": N_(
        "No workstation with agent id %(agent_id)s. See the workstation list for the ids."),
    "enrollment_code.bad_expiry": N_(
        "The expiry %(text)s is not understood. Write e.g. 7d, 12h, 30m or 2025-09-01T08:00:00+06:00."),
    "enrollment_code.expiry_without_zone": N_(
        "The expiry %(text)s has no time zone. Add one, e.g. +06:00 for Bishkek."),
    "enrollment_code.expiry_in_past": N_("The expiry %(text)s is in the past. Choose a later time."),
    "enrollment_code.bad_uses": N_("The number of uses must be between 1 and 10000, not %(uses)s."),
    # who may call a route (policy_server/scope.py)
    "auth.required": N_("You are not logged in (or your session expired). Log in again."),
    "auth.forbidden": N_(
        "Your role may not see or do this. Ask the school's responsible person if you need it."),
    # people
    "person.bad_username": N_(
        "The username %(username)s is not allowed. Use 2-64 lowercase letters, digits, '.', '_' or '-'."),
    "person.unknown_role": N_("Unknown role %(role)s. Choose one of: %(roles)s."),
    "person.weak_password": N_("The password is too short. Use at least %(minimum)s characters."),
    "person.duplicate_username": N_(
        "A person with the username %(username)s already exists. Choose another username."),
    "person.not_found": N_("No person with the username %(username)s."),
    "person.not_active": N_("That person does not exist or is disabled; choose another."),
    # incidents (the web console says these in the same words)
    "incident.not_found": N_("There is no incident number %(id)d that you may see."),
    "incident.already_resolved": N_("This incident is already resolved; nothing was changed."),
    "incident.reason_missing": N_("Write the reason before resolving: what was found and what was done."),
    "incident.reason_too_long": N_("The reason is too long: at most 2000 characters."),
    # backup and retention
    "backup.exists": N_(
        "%(path)s already exists. Choose a new name (e.g. with today's date) or remove it first."),
    "backup.no_folder": N_("The folder %(folder)s does not exist. Create it or choose another --out."),
    "backup.no_database": N_("No SQLite database at %(database)s. Check --state-dir / --db."),
    "backup.tool_missing": N_(
        "%(tool)s not found. Install the PostgreSQL client (apt-get install postgresql-client)."),
    "backup.pg_dump_failed": N_("pg_dump failed: %(output)s"),
    "backup.not_a_file": N_(
        "%(path)s is not a file. Give the path of a backup made by kalkan-server backup."),
    "backup.not_a_backup": N_(
        "%(path)s is neither a SQLite database nor a pg_dump archive: it is not a Kalkan backup "
        "(or it is damaged)."),
    "backup.damaged": N_("%(path)s is damaged (%(problem)s). Use another backup."),
    "backup.not_kalkan": N_("%(path)s is not a Kalkan database: no data for %(missing)s."),
    "retention.bad_days": N_(
        "Retention days must be a whole number of at least 1, not %(days)s. The default is %(default)s."),
    # the command line itself
    "cli.not_a_number": N_("%(option)s %(value)s is not a whole number. Give e.g. 2, or auto."),
    "cli.no_password_on_stdin": N_(
        "No password on standard input. Pipe it in, e.g. echo '…' | kalkan-server create-user …"),
    "cli.passwords_differ": N_("The two passwords differ. Run the command again."),
    "cli.bad_retention_days_env": N_(
        "KALKAN_RETENTION_DAYS=%(value)s is not a whole number of days; e.g. 90."),
    "cli.unknown_check": N_("Unknown check %(names)s. The checks are: %(checks)s."),
    "cli.unknown_room": N_(
        "No room named %(names)s. Rooms are made by enrolment codes (--room); existing rooms: %(rooms)s."),
}


# Domain packages keep the texts of their own codes beside their code (e.g. the console's in
# `policy_server/console/kit.py`) and register them at import with `register_error_texts`,
# so that a new domain does not edit this shared table.
_DOMAIN_TEXTS: dict[str, str] = {}


def register_error_texts(texts: Mapping[str, str]) -> None:
    """Add a domain's code -> message id texts; a code may be registered once, with one text."""
    for code, text in texts.items():
        known = ERROR_TEXTS.get(code) or _DOMAIN_TEXTS.get(code)
        if known is not None and known != text:
            raise ValueError(f"error code {code!r} already has another text: {known!r}")
        _DOMAIN_TEXTS[code] = text


def error_text(code: str | None) -> str | None:
    """The message id of a code, from the shared table or a domain's registered texts."""
    if not code:
        return None
    return ERROR_TEXTS.get(code) or _DOMAIN_TEXTS.get(code)


def all_error_texts() -> dict[str, str]:
    return {**_DOMAIN_TEXTS, **ERROR_TEXTS}


class KalkanError(Exception):
    """`code` is a stable name for the case (e.g. "incident.already_resolved"), so a page, the
    CLI or a script can tell the case (and say it in the reader's language) without parsing
    the English message.  `params` are the values the message names (shown as they are)."""

    status_code = 400
    headers: Mapping[str, str] | None = None  # extra HTTP headers of the API's answer

    def __init__(self, message: str, *, code: str = "", params: Mapping[str, object] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.params = dict(params or {})

    def in_language(self, language: str) -> str:
        """The message in `language` (ky, ru, en) if its code has a text, else the English message.

        English always gives the original message, so its words stay what scripts expect."""
        template = error_text(self.code)
        if template is None or language == "en":
            return self.message
        from policy_server.web.i18n import translate

        try:
            return translate(language, template, **self.params)
        except (KeyError, TypeError, ValueError):
            # A raise whose params do not fit its text: the English message is still right.
            return self.message


class InvalidInput(KalkanError):
    status_code = 422


class NotFound(KalkanError):
    status_code = 404


class Conflict(KalkanError):
    status_code = 409


class Forbidden(KalkanError):
    status_code = 403


class Unauthorized(KalkanError):
    """No or a bad credential (an agent's bearer token); the answer says which scheme to use."""

    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}
