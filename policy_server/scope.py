"""Who may see and change what: one place, called by every service (docs/security.md).

Two halves:

* **Route scope** (who may call a route at all).  Every route of the app declares exactly
  one of these as a dependency, and `tests/server/test_authorisation_matrix.py` walks the
  router: a route without one fails the test.

      @router.get("/api/v1/things")
      def list_things(viewer: scope.Viewer = Depends(scope.allow(Role.admin, Role.teacher)), …)

      @router.get("/login", dependencies=[Depends(scope.public)])
      @router.post("/api/v1/events", dependencies=[Depends(scope.agent_only)])

  `allow(...)` answers 401 when nobody is logged in and 403 for other roles (pages turn
  both into the login redirect or the error page: `NotLoggedIn`, `NotAllowed`).

* **Data scope** (which rows): a `Viewer` is handed to the service functions, which filter
  with `viewer.room_ids` / `viewer.class_ids` and hide students' personal data when
  `viewer.sees_personal_data` is false (director, district: 002 §3.1).  A view never filters
  on its own; an object outside the viewer's scope is answered as "not found" (404), so a
  teacher cannot even learn that another room's incident exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.db.models import Person, PersonClass, PersonRoom, Role
from policy_server.db.session import get_db
from policy_server.errors import Forbidden, Unauthorized

# Ids and integers the API takes are stored as 32-bit INTEGER: a larger one is refused with a
# 422 naming the field (a `Path`/`Query` bound), never a database overflow.
MAX_ID = 2**31 - 1

# Roles that may see students' personal data (OS user names, URLs, names): 001 §2.15, 002 §3.1.
PERSONAL_DATA_ROLES = frozenset({Role.admin, Role.teacher})


class NotLoggedIn(Unauthorized):
    """401: nobody is logged in (pages answer with the login redirect)."""

    headers = None


class NotAllowed(Forbidden):
    """403: this role may not call the route (pages answer with the error page)."""


@dataclass(frozen=True)
class Viewer:
    """The person behind a request and what they may reach.

    `room_ids` / `class_ids` are None for "every room / class" (the responsible person, the
    director and the district viewer) and a (possibly empty) frozenset otherwise (a teacher).
    `person` is None only for `Viewer.system()` (the server's own jobs and the CLI)."""

    person: Person | None
    role: str
    room_ids: frozenset[int] | None
    class_ids: frozenset[int] | None
    class_teacher_of: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def system(cls) -> Viewer:
        """The server itself (periodic checks, the command line run by the responsible person)."""
        return cls(None, Role.admin, None, None)

    @property
    def person_id(self) -> int | None:
        return self.person.id if self.person is not None else None

    @property
    def name(self) -> str:
        return self.person.username if self.person is not None else "system"

    @property
    def sees_everything(self) -> bool:
        return self.role == Role.admin

    @property
    def sees_personal_data(self) -> bool:
        return self.role in PERSONAL_DATA_ROLES

    @property
    def acts_on_incidents(self) -> bool:
        return self.role == Role.admin

    def may_see_room(self, room_id: int | None) -> bool:
        if self.room_ids is None:
            return True
        return room_id is not None and room_id in self.room_ids

    def may_see_class(self, class_id: int | None) -> bool:
        if self.class_ids is None:
            return True
        return class_id is not None and class_id in self.class_ids


def viewer_for(db: Session, person: Person) -> Viewer:
    """The scope of one person, from their role and their rooms and classes (table 0004)."""
    if person.role == Role.admin:
        return Viewer(person, person.role, None, None)
    if person.role in (Role.director, Role.district):
        # Whole school, but aggregates and no personal data (sees_personal_data is False).
        return Viewer(person, person.role, None, None)
    # A teacher, or a role this server does not know: only what is linked to them.
    rooms = frozenset(db.scalars(select(PersonRoom.room_id).where(PersonRoom.person_id == person.id)))
    links = db.execute(select(PersonClass.class_id, PersonClass.class_teacher)
                       .where(PersonClass.person_id == person.id)).all()
    return Viewer(person, person.role, rooms, frozenset(c for c, _ in links),
                  frozenset(c for c, is_ct in links if is_ct))


def _logged_in_person(request: Request, db: Session) -> Person | None:
    from policy_server.people import auth  # people.auth imports the models; keep scope importable

    return auth.optional_person(request, db)


def allow(*roles: Role | str):
    """Route scope: the logged-in person's `Viewer` if their role is one of `roles`."""
    allowed = frozenset(str(r) for r in roles)

    def dependency(request: Request, db: Session = Depends(get_db)) -> Viewer:
        person = _logged_in_person(request, db)
        if person is None:
            raise NotLoggedIn("You are not logged in (or your session expired). Log in again.",
                              code="auth.required")
        if person.role not in allowed:
            raise NotAllowed(f"Your role ({person.role}) may not see or do this; it needs one of: "
                             f"{', '.join(sorted(allowed))}. Ask the school's responsible person if "
                             "you need it.", code="auth.forbidden", params={"role": person.role})
        viewer = viewer_for(db, person)
        request.state.viewer = viewer
        return viewer

    dependency.kalkan_scope = ("roles", allowed)  # read by the authorisation-matrix test
    return dependency


def allow_or_token(*roles: Role | str, setting: str):
    """Route scope: like `allow(*roles)`, or a bearer token equal to the server setting
    `setting` (e.g. `metrics_token` for a Prometheus scraper, docs/operations.md).  The token
    gives `Viewer.system()` for this route only; with the setting unset only the roles count.
    Refusals are JSON 401/403 (a scraper is not sent to the login page).
    Declared as the roles' scope: the authorisation matrix treats it as `allow(*roles)`."""
    import hmac

    inner = allow(*roles)

    def dependency(request: Request, db: Session = Depends(get_db)) -> Viewer:
        expected = getattr(request.app.state.settings, setting, None)
        header = request.headers.get("authorization", "")
        if expected and header[:7].lower() == "bearer " and hmac.compare_digest(
                header[7:].strip().encode(), str(expected).encode()):
            return Viewer.system()
        try:
            return inner(request, db)
        except NotLoggedIn as exc:  # a machine's route: 401/403 as JSON, never the login page
            raise Unauthorized(exc.message, code=exc.code) from None
        except NotAllowed as exc:
            raise Forbidden(exc.message, code=exc.code, params=exc.params) from None

    dependency.kalkan_scope = inner.kalkan_scope  # type: ignore[attr-defined]
    return dependency


def public() -> None:
    """Route scope: anyone (login page, static files, health, the student's report status)."""


public.kalkan_scope = ("public", frozenset())  # type: ignore[attr-defined]


def agent_only(request: Request) -> None:
    """Route scope: an enrolled agent's bearer token.  Here only its presence is checked (no
    database: the events route must not open a transaction before the body is read); the
    handler looks the token up with `agents.auth` and answers 401 for an unknown one."""
    from policy_server.agents.auth import bearer_token

    bearer_token(request)  # 401 agent.token_missing


agent_only.kalkan_scope = ("agent", frozenset())  # type: ignore[attr-defined]


def route_scope(route) -> tuple[str, frozenset[str]] | None:
    """The scope a route declared (for the authorisation-matrix test), or None."""
    dependant = getattr(route, "dependant", None)
    stack = list(dependant.dependencies) if dependant is not None else []
    while stack:
        dep = stack.pop()
        declared = getattr(dep.call, "kalkan_scope", None)
        if declared is not None:
            return declared
        stack.extend(dep.dependencies)
    return None
