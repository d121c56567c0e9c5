"""Server test fixtures: every DB-backed test runs on SQLite and on PostgreSQL.

`db_url` is parametrized ("sqlite", "postgres"); `api` is an in-process TestClient on a
fresh database with helpers to enrol agents and log people in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from policy_server import protocol
from policy_server.app import create_app
from policy_server.settings import Settings
from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kalkan.sqlite'}"
    return request.getfixturevalue("postgres_cluster").create_database()


@dataclass
class Api:
    client: TestClient
    app: object

    def db(self):
        return self.app.state.sessionmaker()

    def code(self, room: str | None = "lab-1", uses: int = 1, expires: str = "7d") -> str:
        from policy_server.agents.service import create_enrollment_code, parse_expiry
        from policy_server.school.service import ensure_room, ensure_school

        with self.db() as db:
            ensure_school(db, name="Test School", actor="test")
            if room:
                ensure_room(db, name=room, actor="test")
            code = create_enrollment_code(
                db, actor="test", room=room, uses=uses, expires_at=parse_expiry(expires)
            )
            db.commit()
        return code

    def enroll(
        self, hostname: str = "pc-01", seat: str | None = "seat-1", room: str = "lab-1"
    ) -> tuple[str, dict]:
        r = self.client.post(
            "/api/v1/enroll", json={"code": self.code(room), "hostname": hostname, "seat": seat}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        return body["agent_id"], {"Authorization": f"Bearer {body['token']}"}

    def user(self, role: str, username: str, **extra) -> int:
        from policy_server.people.service import create_person

        with self.db() as db:
            person = create_person(db, username=username, role=role, password=PASSWORD, actor="test", **extra)
            db.commit()
            return person.id

    def login(self, username: str) -> dict:
        """Log in (cookie kept by the client); returns the CSRF header to send on writes."""
        self.client.cookies.clear()
        r = self.client.post("/api/v1/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return {"X-CSRF-Token": r.json()["csrf_token"]}

    def post(self, headers: dict, *events: protocol.EventEnvelope | dict) -> dict:
        body = [e.model_dump(mode="json") if isinstance(e, protocol.EventEnvelope) else e for e in events]
        r = self.client.post("/api/v1/events", json={"events": body}, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    app = create_app(Settings(state_dir=tmp_path / "state", db_url=db_url, tls=False))
    with TestClient(app) as client:
        yield Api(client=client, app=app)
