"""JSON login for the admin API and scripts (`POST /api/v1/login`, `POST /api/v1/logout`).

The web console has its own form login (policy_server.web); both create the same
`LoginSession` and cookie.  The answer carries the CSRF token to send as `X-CSRF-Token`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from policy_server import scope
from policy_server.db.models import Person, Role
from policy_server.db.session import get_db
from policy_server.people.auth import (
    clear_session_cookie,
    create_login_session,
    csrf_token_for,
    end_login_session,
    require_csrf,
    set_session_cookie,
)
from policy_server.scope import Viewer
from policy_server.security.throttle import TooManyLogins, attempt_login, client_address

router = APIRouter(prefix="/api/v1", tags=["people"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def person_as_dict(person: Person) -> dict:
    return {"id": person.id, "username": person.username, "full_name": person.full_name, "role": person.role}


@router.post("/login", dependencies=[Depends(scope.public)])
def login(body: LoginRequest, request: Request, response: Response, db: Session = Depends(get_db)) -> dict:
    outcome = attempt_login(db, request.app.state.login_throttle, username=body.username,
                            password=body.password, address=client_address(request), via="api")
    if outcome.refusal is not None:
        raise TooManyLogins(outcome.refusal)
    person = outcome.person
    if person is None:
        raise HTTPException(401, "wrong username or password (or the account is disabled)")
    hours = request.app.state.settings.login_session_hours
    cookie, login_session = create_login_session(db, person, hours=hours)
    db.commit()
    set_session_cookie(response, request, cookie)
    return {"person": person_as_dict(person), "csrf_token": login_session.csrf_token}


@router.post("/logout")
def logout(request: Request, response: Response, _viewer: Viewer = Depends(scope.allow(*Role)),
           person: Person = Depends(require_csrf),
           db: Session = Depends(get_db)) -> dict:
    end_login_session(db, request)
    db.commit()
    clear_session_cookie(response)
    return {"status": "logged out"}


@router.get("/me")
def me(request: Request, viewer: Viewer = Depends(scope.allow(*Role))) -> dict:
    return {"person": person_as_dict(viewer.person), "csrf_token": csrf_token_for(request)}
