"""Passwords, login sessions and the FastAPI dependencies that guard pages and the admin API.

* Passwords are hashed with argon2 (argon2-cffi defaults).
* A login makes a random cookie value; the database keeps only its SHA-256 (`LoginSession.id`),
  so a stolen database does not give working cookies.  The cookie is `kalkan_session`,
  HttpOnly, SameSite=Lax, and Secure when the server runs TLS.
* Each login session has its own CSRF token.  Forms carry it in a hidden field (`csrf_token`),
  the JSON API in the `X-CSRF-Token` header; `check_csrf` compares in constant time.

Dependencies: `current_person` (401 when not logged in), `optional_person` (None instead),
`require_roles(*roles)` (403 for other roles), `require_csrf` (for JSON API writes).
`current_person` leaves the login session in `request.state.login_session`, so
`check_csrf(request, token)` and `csrf_token_for(request)` work after it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.db.models import LoginSession, Person, Role, utcnow
from policy_server.db.session import get_db

SESSION_COOKIE = "kalkan_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"

_hasher = PasswordHasher()
# Verified against when the username is unknown, so that both cases take the same time.
_DUMMY_HASH = _hasher.hash("kalkan-timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def authenticate(db: Session, username: str, password: str) -> Person | None:
    """The person if the username and password match and the account is enabled."""
    person = db.scalar(select(Person).where(Person.username == username))
    if person is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(person.password_hash, password) or person.disabled:
        return None
    if _hasher.check_needs_rehash(person.password_hash):
        person.password_hash = hash_password(password)
    return person


def find_person(db: Session, username: str) -> Person | None:
    return db.scalar(select(Person).where(Person.username == username))


def create_login_session(db: Session, person: Person, *, hours: int = 12) -> tuple[str, LoginSession]:
    """Start a login: returns the cookie value (give it to the browser) and the stored row.

    The caller commits."""
    cookie_value = secrets.token_urlsafe(32)
    login = LoginSession(
        id=sha256_hex(cookie_value),
        person_id=person.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + timedelta(hours=hours),
    )
    db.add(login)
    return cookie_value, login


def set_session_cookie(response: Response, request: Request, cookie_value: str) -> None:
    settings = request.app.state.settings
    response.set_cookie(
        SESSION_COOKIE,
        cookie_value,
        max_age=settings.login_session_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=bool(settings.tls),
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def end_login_session(db: Session, request: Request) -> None:
    """Log out: revoke the login session of this request's cookie (the caller commits)."""
    cookie_value = request.cookies.get(SESSION_COOKIE)
    if cookie_value:
        login = db.get(LoginSession, sha256_hex(cookie_value))
        if login is not None:
            login.revoked = True


def _load_login(request: Request, db: Session) -> tuple[LoginSession, Person] | None:
    cookie_value = request.cookies.get(SESSION_COOKIE)
    if not cookie_value:
        return None
    login = db.get(LoginSession, sha256_hex(cookie_value))
    if login is None or login.revoked or login.expires_at <= utcnow():
        return None
    person = db.get(Person, login.person_id)
    if person is None or person.disabled:
        return None
    request.state.login_session = login
    request.state.person = person
    return login, person


def optional_person(request: Request, db: Session = Depends(get_db)) -> Person | None:
    found = _load_login(request, db)
    return found[1] if found else None


def current_person(request: Request, db: Session = Depends(get_db)) -> Person:
    found = _load_login(request, db)
    if found is None:
        raise HTTPException(401, "You are not logged in (or your session expired). Log in again.")
    return found[1]


def require_roles(*roles: Role | str):
    """Dependency factory: the logged-in person, if their role is one of `roles`."""
    allowed = {str(r) for r in roles}

    def dependency(person: Person = Depends(current_person)) -> Person:
        if person.role not in allowed:
            raise HTTPException(
                403,
                f"Your role ({person.role}) may not do this; it needs one of: {', '.join(sorted(allowed))}.",
            )
        return person

    return dependency


def csrf_token_for(request: Request) -> str | None:
    login = getattr(request.state, "login_session", None)
    return login.csrf_token if login else None


def check_csrf(request: Request, token: str | None) -> None:
    """Raise 403 unless `token` is this login session's CSRF token."""
    expected = csrf_token_for(request)
    if not expected or not token or not hmac.compare_digest(expected, token):
        raise HTTPException(
            403, "The form's security token is missing or out of date. Reload the page and try again."
        )


def require_csrf(request: Request, person: Person = Depends(current_person)) -> Person:
    """For JSON API writes: the `X-CSRF-Token` header must match the login session."""
    check_csrf(request, request.headers.get(CSRF_HEADER))
    return person
