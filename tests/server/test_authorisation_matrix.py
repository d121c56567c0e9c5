"""The authorisation matrix: every route of the app × every role × own/other room.

Generated from the app's routes (`app.routes`), so a route added later is covered without
touching this file:

* a route that declares no scope (`scope.allow(...)`, `scope.public`, `scope.agent_only`,
  policy_server/scope.py) fails `test_every_route_declares_a_scope`;
* `test_matrix` calls every route, with every method, as each role, against a real server
  process with real data (two rooms, incidents opened by real agent uploads), and checks:
  - a role outside the route's scope gets 401/403/404 (a page may send the anonymous
    visitor to the login page instead), never 2xx, never 5xx;
  - a role inside the scope never gets a 5xx;
  - where the path names an object (incidents and lessons: own room / other room), a teacher
    of room A gets 403/404 for room B's object, a teacher with no room for both (a 422 that
    refuses the request's body before the object is looked up discloses nothing and passes);
  - no answer carries personal data the role may not see: a teacher of room A never room B's
    OS user names or URLs; the director, the district viewer, a teacher with no room, the
    anonymous visitor and an agent never any student's OS user name or URL (002 §3.1).
  A path parameter not in `World.ids` gets a nonexistent value: still never a 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Mount

from policy_server import protocol, scope
from policy_server.app import create_app
from policy_server.settings import Settings
from tests.support.postgres import postgres_cluster  # noqa: F401  (fixture)
from tests.support.server import KalkanServerProcess

PASSWORD = "matrix-password-1"
ROLES = ("admin", "teacher_a", "teacher_none", "director", "district", "anonymous", "agent")
PERSON_ROLE = {"admin": "admin", "teacher_a": "teacher", "teacher_none": "teacher", "director": "director",
               "district": "district"}
# Personal data planted in each room; a role must never see another's.
SECRETS = {
    "A": ("pupil-alpha-a", "secret-path-a"),
    "B": ("pupil-beta-b", "secret-path-b"),
}
# What each role may read of the planted personal data.
MAY_READ = {"admin": {"A", "B"}, "teacher_a": {"A"}}

NONEXISTENT = "999999"


@dataclass
class World:
    server: KalkanServerProcess
    ids: dict[str, dict[str, str]]  # path parameter -> {"own": value, "other": value}
    agent_token: str

    def path_values(self, name: str) -> dict[str, str]:
        """Own/other values of a path parameter, or one nonexistent value when unknown."""
        return self.ids.get(name) or {"none": NONEXISTENT}


def _report(url: str, os_user: str, seat: str) -> dict:
    event = protocol.make_event("web.report", {"url": url, "comment": f"comment by {os_user}"},
                                subject=protocol.Subject(os_user=os_user, seat=seat))
    return event.model_dump(mode="json")


def _incident_of(server: KalkanServerProcess, agent_id: str) -> int:
    from sqlalchemy import select

    from policy_server.db.models import Incident

    with server.db() as db:
        return db.scalar(select(Incident.id).where(Incident.agent_id == agent_id))


def _rooms(server: KalkanServerProcess) -> dict[str, str]:
    from policy_server.school.service import find_room

    with server.db() as db:
        return {"own": str(find_room(db, "Room A").id), "other": str(find_room(db, "Room B").id)}


def _isuo_sessions(server: KalkanServerProcess, agents: dict[str, str]) -> None:
    """An ISUO session in each room, by the room's student account (personal data too)."""
    from datetime import timedelta

    from policy_server.db.models import IsuoAccess, utcnow

    with server.db() as db:
        for room, agent_id in agents.items():
            start = utcnow() - timedelta(minutes=30)
            db.add(IsuoAccess(agent_id=agent_id, seat=f"{room.lower()}-01", os_user=SECRETS[room][0],
                              host="emis.edu.gov.kg", started_at=start,
                              ended_at=start + timedelta(minutes=5)))
        db.commit()


def _lessons(server: KalkanServerProcess) -> dict[str, str]:
    """A lesson of the teacher of room A in room A (own) and one in room B (other)."""
    from datetime import timedelta

    from policy_server.db.models import utcnow
    from policy_server.lessons.service import start_lesson
    from policy_server.people.service import get_person_by_username
    from policy_server.school.service import find_room
    from policy_server.scope import viewer_for

    with server.db() as db:
        ends = utcnow() + timedelta(hours=2)
        teacher = viewer_for(db, get_person_by_username(db, "teacher-a"))
        admin = viewer_for(db, get_person_by_username(db, "admin"))
        own = start_lesson(db, teacher, room_id=find_room(db, "Room A").id, ends_at=ends)
        other = start_lesson(db, admin, room_id=find_room(db, "Room B").id, ends_at=ends)
        db.commit()
        return {"own": own.id, "other": other.id}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request, tmp_path_factory: pytest.TempPathFactory):
    from policy_server.people.service import get_person_by_username
    from policy_server.school.service import link_person_to_room

    db_url = request.getfixturevalue("postgres_cluster").create_database() \
        if request.param == "postgres" else None
    with KalkanServerProcess(tmp_path_factory.mktemp("matrix"), db_url=db_url, tls=False) as server:
        agent_a, token_a = server.enroll("pc-a", seat="a-01", room="Room A")
        agent_b, token_b = server.enroll("pc-b", seat="b-01", room="Room B")
        for token, room in ((token_a, "A"), (token_b, "B")):
            os_user, path = SECRETS[room]
            with server.agent_client(token) as agent:
                r = agent.post("/api/v1/events", json={"events": [
                    _report(f"http://site-{room.lower()}.example/{path}", os_user, f"{room.lower()}-01")]})
                assert r.status_code == 200, r.text
        for role, person_role in PERSON_ROLE.items():
            server.create_user(person_role, role.replace("_", "-"), PASSWORD)
        with server.db() as db:
            teacher = get_person_by_username(db, "teacher-a")
            link_person_to_room(db, person_id=teacher.id, room="Room A", actor="test")
            db.commit()
        ids = {"incident_id": {"own": str(_incident_of(server, agent_a)),
                               "other": str(_incident_of(server, agent_b))},
               "lesson_id": _lessons(server), "room_id": _rooms(server)}
        _isuo_sessions(server, {"A": agent_a, "B": agent_b})
        yield World(server=server, ids=ids, agent_token=token_a)


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list:
    """The routes of the app as the server builds it (same code, own throwaway state)."""
    app = create_app(Settings(state_dir=tmp_path_factory.mktemp("routes"), tls=False))
    # Flattened: included routers' routes with their full paths and combined dependencies.
    yield list(iter_route_contexts(app.routes))
    app.state.engine.dispose()


def declared_scope(route) -> tuple[str, frozenset[str]] | None:
    if isinstance(route.original_route, APIRoute):
        return scope.route_scope(route)
    if isinstance(route.original_route, Mount) and route.path == "/static":
        return ("public", frozenset())  # static files (CSS, htmx) carry no data
    return None


def test_every_route_declares_a_scope(routes):
    undeclared = [f"{sorted(getattr(r, 'methods', None) or ['*'])} {r.path}"
                  for r in routes if declared_scope(r) is None]
    assert not undeclared, (
        "routes without a declared scope (add Depends(scope.allow(...)), dependencies=[Depends("
        f"scope.public)] or dependencies=[Depends(scope.agent_only)]): {undeclared}")


def test_the_matrix_knows_every_kind_of_scope(routes):
    kinds = {declared_scope(r)[0] for r in routes if declared_scope(r)}
    assert kinds == {"roles", "public", "agent"}


def _session_cookie(server: KalkanServerProcess, username: str) -> tuple[str, str]:
    """A fresh login session made in the database (no password hashing per request, and a
    route that logs out cannot spoil the next request)."""
    from policy_server.people.auth import SESSION_COOKIE, create_login_session
    from policy_server.people.service import get_person_by_username

    with server.db() as db:
        cookie, login = create_login_session(db, get_person_by_username(db, username))
        db.commit()
        return f"{SESSION_COOKIE}={cookie}", login.csrf_token


def _call(world: World, role: str, method: str, path: str) -> httpx.Response:
    headers: dict[str, str] = {}
    is_api = path.startswith("/api/")
    form = None
    if role == "agent":
        headers["Authorization"] = f"Bearer {world.agent_token}"
    elif role != "anonymous":
        cookie, csrf = _session_cookie(world.server, role.replace("_", "-"))
        headers["Cookie"] = cookie
        headers["X-CSRF-Token"] = csrf
        form = {"csrf_token": csrf}
    kwargs: dict = {}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        if is_api:
            kwargs["json"] = {}
        else:
            kwargs["data"] = form or {}
    with world.server.client(timeout=10, follow_redirects=False) as client:
        request = client.build_request(method, path, headers=headers, **kwargs)
        response = client.send(request, stream=True)  # the policy stream never ends: read a bit
        try:
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > 200_000 or response.headers.get("content-type", "").startswith(
                        "text/event-stream"):
                    break
        finally:
            response.close()
        response._content = body
        return response


def _variants(world: World, route) -> list[tuple[str, str]]:
    """(variant, concrete path) for the route: own/other room where the table knows the
    parameter, a nonexistent value otherwise."""
    names = [p.name for p in route.dependant.path_params]
    if not names:
        return [("none", route.path)]
    out = []
    keys = set()
    for name in names:
        keys |= set(world.path_values(name))
    for variant in sorted(keys):
        path = route.path
        for name in names:
            values = world.path_values(name)
            path = path.replace("{" + name + "}", values.get(variant) or next(iter(values.values())))
        out.append((variant, path))
    return out


def _denied(status: int, response: httpx.Response, is_api: bool, role: str, *,
            invalid_ok: bool = False) -> bool:
    if status in (401, 403, 404):
        return True
    if invalid_ok and status == 422:
        return True  # the body was refused before the object was looked up: nothing disclosed
    # A page sends a visitor who is not logged in (or an agent) to the login page.
    return (not is_api and role in ("anonymous", "agent") and status == 303
            and response.headers.get("location", "").startswith("/login"))


def test_matrix(world: World, routes):
    violations: list[str] = []
    calls = 0
    for route in routes:
        if not isinstance(route.original_route, APIRoute):
            continue
        kind, allowed = declared_scope(route)
        is_api = route.path.startswith("/api/")
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            for variant, path in _variants(world, route):
                for role in ROLES:
                    response = _call(world, role, method, path)
                    calls += 1
                    status = response.status_code
                    where = f"{role:12} {method:6} {path} ({variant}) -> {status}"
                    if status >= 500:
                        violations.append(f"{where}: server error")
                        continue
                    if kind == "roles":
                        inside = PERSON_ROLE.get(role) in allowed
                    elif kind == "agent":
                        inside = role == "agent"
                    else:
                        inside = True
                    if not inside and not _denied(status, response, is_api, role):
                        violations.append(f"{where}: outside the scope {kind} {sorted(allowed)}")
                    # An object of another room, or any room's for a teacher with none.
                    if inside and kind == "roles" and (
                            (role == "teacher_a" and variant == "other")
                            or (role == "teacher_none" and variant in ("own", "other"))) \
                            and not _denied(status, response, is_api, role, invalid_ok=True):
                        violations.append(f"{where}: another room's object")
                    text = response.text
                    for room, secrets in SECRETS.items():
                        if room in MAY_READ.get(role, set()):
                            continue
                        for secret in secrets:
                            if secret in text:
                                violations.append(f"{where}: shows {secret!r} of room {room}")
    assert calls > 100
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations)


def test_the_matrix_sees_what_each_role_may_see(world: World):
    """The matrix's leak check is not vacuous: the roles that may read the planted data do."""
    own, other = world.ids["incident_id"]["own"], world.ids["incident_id"]["other"]
    admin = _call(world, "admin", "GET", "/api/v1/incidents").text
    assert all(s in admin for secrets in SECRETS.values() for s in secrets)
    teacher = _call(world, "teacher_a", "GET", "/api/v1/incidents")
    seen = [i["id"] for i in teacher.json()["incidents"]]  # (+ periodic checks' incidents of room A)
    assert teacher.status_code == 200 and int(own) in seen and int(other) not in seen
    assert "pupil-alpha-a" in teacher.text and "secret-path-a" in teacher.text
    assert _call(world, "teacher_a", "GET", f"/incidents/{own}").status_code == 200
    assert _call(world, "teacher_a", "GET", f"/incidents/{other}").status_code == 404
    assert _call(world, "teacher_none", "GET", "/api/v1/incidents").json() == {"incidents": [], "total": 0}
    director = _call(world, "director", "GET", "/api/v1/incidents").json()
    reports = [i for i in director["incidents"] if i["rule"] == "web.report"]
    assert {i["params"]["url"] for i in reports} == {"site-a.example", "site-b.example"}  # the host only


def test_unknown_path_parameters_get_a_nonexistent_value(world: World):
    assert world.path_values("scene_id") == {"none": NONEXISTENT}
    assert set(world.path_values("lesson_id")) == {"own", "other"}


def test_openapi_reachable_for_the_admin_only(world: World):
    assert _call(world, "admin", "GET", "/openapi.json").json()["paths"]
    assert _call(world, "anonymous", "GET", "/openapi.json").status_code == 401
    assert _call(world, "director", "GET", "/openapi.json").status_code == 403
    docs = _call(world, "admin", "GET", "/docs")
    assert docs.status_code == 200 and "/api/v1/incidents" in docs.text and "<script" not in docs.text


HUGE_VALUES = (str(2**63), str(2**31), "-1", "0")


def test_no_route_fails_on_ids_and_numbers_past_the_database_range(world: World, routes):
    """Every path parameter and every integer query parameter of every route, past the
    range of the database's integers (or negative): a 4xx (422 naming the field where the
    signature bounds it), never a 5xx — as the responsible person, who passes every scope."""
    failures = []
    calls = 0
    for route in routes:
        if not isinstance(route.original_route, APIRoute):
            continue
        path_params = [p.name for p in route.dependant.path_params]
        int_queries = [p.name for p in route.dependant.query_params if p.field_info.annotation is int
                       or getattr(p, "type_", None) is int]
        if not path_params and not int_queries:
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            for value in HUGE_VALUES:
                path = route.path
                for name in path_params:
                    path = path.replace("{" + name + "}", value)
                if int_queries:
                    path += "?" + "&".join(f"{name}={value}" for name in int_queries)
                response = _call(world, "admin", method, path)
                calls += 1
                if response.status_code >= 500:
                    failures.append(f"{method} {path} -> {response.status_code}")
    assert calls > 50
    assert not failures, "\n".join(failures)
