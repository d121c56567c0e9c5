"""Errors the service layer raises; the API turns them into HTTP answers with the message.

Every message names the problem and, where there is one, the fix: it is shown to a person.
"""


class KalkanError(Exception):
    """`code` is a stable name for the case (e.g. "incident.already_resolved"), so a page can
    say it in the reader's language without parsing the English message."""

    status_code = 400

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidInput(KalkanError):
    status_code = 422


class NotFound(KalkanError):
    status_code = 404


class Conflict(KalkanError):
    status_code = 409


class Forbidden(KalkanError):
    status_code = 403
