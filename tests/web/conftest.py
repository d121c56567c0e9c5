"""Fixtures for the web console tests.

* `web_app` / `client`: the real FastAPI app (`create_app`) on a fresh SQLite file,
  migrated like production, driven through Starlette's TestClient (cheap checks).
* `school`: helpers that put people, workstations, incidents and ISUO records into
  that database through the services where they exist, through the models where
  the data would come from agents.
* `browser`: a real headless Chromium (playwright, /usr/bin/chromium), one per test module: the
  shared fixture of tests/conftest.py (with `assert_fits_width` for the 390 px screenshots).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from policy_server.app import create_app
from policy_server.db.models import Event, Incident, IncidentEvent, IsuoAccess, TimelineEntry, Workstation
from policy_server.people.service import create_person, disable_person
from policy_server.settings import Settings
from tests.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402,F401  (importers of these names)

PASSWORD = "correct-horse-7"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def web_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    state = tmp_path_factory.mktemp("web-state")
    app = create_app(Settings(state_dir=state, tls=False))
    yield app
    app.state.engine.dispose()


@pytest.fixture()
def client(web_app: FastAPI) -> Iterator[TestClient]:
    """A fresh browser-like client (own cookie jar) for each test."""
    with TestClient(web_app, base_url="http://127.0.0.1") as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no form with a csrf_token field"
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD, **extra: str):
    form_page = client.get("/login")
    data = {"username": username, "password": password, "csrf_token": csrf_of(form_page.text),
            "next": "/incidents", **extra}
    return client.post("/login", data=data, follow_redirects=False)


@dataclass
class School:
    """Puts a small school into the web app's database."""

    app: FastAPI

    def session(self):
        return self.app.state.sessionmaker()

    def person(self, role: str, *, disabled: bool = False, language: str | None = None,
               full_name: str = "") -> str:
        username = f"{role}-{uuid.uuid4().hex[:8]}"
        with self.session() as db:
            create_person(db, username=username, role=role, password=PASSWORD, actor="test",
                          language=language, full_name=full_name)
            if disabled:
                disable_person(db, username=username, actor="test")
            db.commit()
        return username

    def room(self, name: str) -> None:
        from policy_server.school.service import ensure_room, ensure_school

        with self.session() as db:
            ensure_school(db, name="School No. 35", actor="test")
            ensure_room(db, name=name, actor="test")
            db.commit()

    def workstation(self, *, hostname: str, room: str | None = None, seat: str | None = None,
                    last_seen_at: datetime | None = None, health: dict | None = None,
                    policy_version: int | None = None) -> str:
        from policy_server.school.service import find_room

        if room:
            self.room(room)
        agent_id = str(uuid.uuid4())
        with self.session() as db:
            room_row = find_room(db, room) if room else None
            db.add(Workstation(id=agent_id, hostname=hostname, seat=seat,
                               room_id=room_row.id if room_row else None, token_hash=uuid.uuid4().hex,
                               agent_version="0.1.0", last_seen_at=last_seen_at,
                               health=health or {}, policy_version=policy_version))
            db.commit()
        return agent_id

    def incident(self, agent_id: str, *, rule: str = "web.report", title: str = "A user reported a page",
                 url: str = "http://bad.example/page", severity: str = "medium", os_user: str = "student7",
                 seat: str | None = "07", at: datetime | None = None, clauses: tuple[str, ...] = ("000 §8.3",)
                 ) -> int:
        at = at or datetime.now(UTC)
        event_id = str(uuid.uuid4())
        with self.session() as db:
            db.add(Event(id=event_id, agent_id=agent_id, type="web.report", occurred_at=at, os_user=os_user,
                         seat=seat, data={"url": url, "comment": "scary"}, clauses=list(clauses)))
            incident = Incident(rule=rule, title=title, params={"url": url}, severity=severity,
                                clauses=list(clauses), dedup_key=f"{rule}:{event_id}", status="new",
                                agent_id=agent_id, seat=seat, os_user=os_user,
                                first_seen_at=at, last_seen_at=at,
                                window_ends_at=at + timedelta(minutes=10), event_count=1)
            db.add(incident)
            db.flush()
            db.add(IncidentEvent(incident_id=incident.id, event_id=event_id))
            db.add(TimelineEntry(incident_id=incident.id, actor="system", action="opened", detail={}, at=at))
            db.commit()
            return incident.id

    def status_of(self, incident_id: int) -> str:
        with self.session() as db:
            return db.get(Incident, incident_id).status

    def isuo_access(self, agent_id: str, *, os_user: str, seat: str, started_at: datetime,
                    ended_at: datetime | None = None) -> None:
        with self.session() as db:
            db.add(IsuoAccess(agent_id=agent_id, seat=seat, os_user=os_user, host="emis.edu.gov.kg",
                              started_at=started_at, ended_at=ended_at))
            db.commit()

    def teacher_teaches_in(self, username: str, room: str) -> None:
        """Link the teacher to the room (`person_rooms`): what the scope reads (docs/security.md)."""
        from policy_server.people.service import get_person_by_username
        from policy_server.school.service import link_person_to_room

        self.room(room)
        with self.session() as db:
            person = get_person_by_username(db, username)
            link_person_to_room(db, person_id=person.id, room=room, actor="test")
            db.commit()


@pytest.fixture(scope="module")
def school(web_app: FastAPI) -> School:
    return School(web_app)


# Chromium: one headless browser per test module, the `browser` fixture of tests/conftest.py.
