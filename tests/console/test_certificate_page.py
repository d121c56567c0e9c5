"""The server certificate's page (/server-certificate) and the service it shares with
`kalkan-server tls …` (policy_server/certs/service.py): prepare, count, refuse, activate anyway,
withdraw; errors as messages, never a 5xx; admin only; every action audited with 000 §3.2."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from policy_server.app import create_app
from policy_server.certs import cli as tls_cli
from policy_server.certs import rotation, service
from policy_server.certs.served import SERVED_ENV
from policy_server.db.models import AuditRecord, Workstation
from policy_server.errors import Conflict, NotFound
from policy_server.settings import Settings
from policy_server.tls import cert_fingerprint, ensure_server_cert
from tests.web.conftest import School, csrf_of, login

PAGE = "/server-certificate"


@pytest.fixture(scope="module")
def tls_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("cert-page"), tls=True)
    ensure_server_cert(settings.cert_path, settings.key_path)  # as `kalkan-server run` makes it
    app = create_app(settings)
    yield app
    app.state.engine.dispose()


@pytest.fixture()
def files(tls_app) -> Iterator[rotation.CertFiles]:
    """The app's certificate files; each test starts without a rotation under way."""
    files = rotation.CertFiles.of(tls_app.state.settings)
    yield files
    for path in (*files.next, files.withdrawn):
        path.unlink(missing_ok=True)


@pytest.fixture()
def seats(tls_app) -> Iterator[School]:
    """Three seats: one seen now (its pins set by the test), one seen now without the next pin,
    one not seen for a month."""
    school = School(tls_app)
    with school.session() as db:
        for ws in db.scalars(select(Workstation)):
            db.delete(ws)
        db.commit()
    now = datetime.now(UTC)
    school.workstation(hostname="pc-a", room="Lab 1", seat="lab1-01", last_seen_at=now)
    school.workstation(hostname="pc-b", room="Lab 1", seat="lab1-02", last_seen_at=now)
    school.workstation(hostname="pc-c", room="Lab 2", seat="lab2-01", last_seen_at=now - timedelta(days=30))
    return school


def _report_pins(school: School, seat: str, pins: list[str]) -> None:
    """What the agent's heartbeat stores: the pins it holds (`health.tls_pins`)."""
    with school.session() as db:
        ws = db.scalar(select(Workstation).where(Workstation.seat == seat))
        ws.health = {**(ws.health or {}), "tls_pins": pins}
        db.commit()


def _audit(school: School, action: str) -> list[AuditRecord]:
    with school.session() as db:
        return list(db.scalars(select(AuditRecord).where(AuditRecord.action == action)
                               .order_by(AuditRecord.id)))


def test_the_service_the_cli_and_the_page_share(tls_app, files, seats):
    settings = tls_app.state.settings
    served = cert_fingerprint(files.cert)
    with seats.session() as db:
        dbs = [("", db)]
        before = service.status(settings, dbs)
        assert before.next is None and before.served.fingerprint == served
        assert before.served.valid_until > datetime.now(UTC).date() + timedelta(days=3000)
        assert "localhost" in before.served.names and "127.0.0.1" in before.served.names

        made = service.rotate(settings, dbs, actor="rp.admin")
        assert made.current == served and files.next[0].exists()
        _report_pins(seats, "lab1-01", [served, made.next])
        with pytest.raises(Conflict) as again:
            service.rotate(settings, dbs, actor="rp.admin")
        assert again.value.code == "tls.next_exists"

        now = service.status(settings, dbs)
        assert now.next.fingerprint == made.next
        assert [s.name for s in now.ready.ready] == ["lab1-01"]
        assert [s.name for s in now.ready.waiting] == ["lab1-02"]
        assert [s.name for s in now.ready.absent] == ["lab2-01"]

        with pytest.raises(Conflict) as refused:
            service.activate(settings, dbs, actor="rp.admin")
        assert refused.value.code == "tls.seats_not_ready" and "lab1-02" in refused.value.params["names"]
        assert cert_fingerprint(files.cert) == served  # nothing changed

    assert tls_cli.service is service  # the command line calls this very module (one code path)

    with seats.session() as db:
        assert service.cancel(settings, [("", db)], actor="rp.admin") == made.next
        with pytest.raises(NotFound) as nothing:
            service.cancel(settings, [("", db)], actor="rp.admin")
        assert nothing.value.code == "tls.nothing_to_cancel"
        again = service.rotate(settings, [("", db)], actor="rp.admin")
        done = service.activate(settings, [("", db)], actor="rp.admin", force=True)
    assert done.forced and done.done.current == again.next and done.done.previous == served
    assert cert_fingerprint(files.cert) == again.next and cert_fingerprint(files.previous[0]) == served

    made_rows = _audit(seats, "tls.next_made")
    activated = _audit(seats, "tls.activated")[-1]
    assert made_rows[-1].actor == "rp.admin" and made_rows[-1].detail["clauses"] == ["000 §3.2"]
    assert activated.detail["forced"] is True and "lab1-02" in activated.detail["seats"]
    assert _audit(seats, "tls.next_withdrawn")[-1].detail["new_certificate"] == made.next


def test_status_json_of_the_cli_after_the_page_prepared(tls_app, files, seats, capsys):
    settings = tls_app.state.settings
    with seats.session() as db:
        made = service.rotate(settings, [("", db)], actor="rp.admin")
    tls_cli.run(argparse.Namespace(tls_command="status", json=True, days=14), settings,
                lambda m, **p: m % p if p else m)
    out = json.loads(capsys.readouterr().out)
    assert out["next"] == made.next and out["seats"] == 3
    assert [s["seat"] for s in out["waiting"]] == ["lab1-01", "lab1-02"]


def test_files_not_writable_is_a_message_not_an_oserror(tls_app, files, seats):
    settings = tls_app.state.settings
    files.next[1].mkdir()  # the key's place taken: the write fails as on a read-only folder
    try:
        with seats.session() as db, pytest.raises(service.FilesNotWritable) as failed:
            service.rotate(settings, [("", db)], actor="rp.admin")
        assert failed.value.code == "tls.files_not_writable" and failed.value.status_code == 409
        assert failed.value.params["folder"] == str(files.cert.parent)
    finally:
        files.next[1].rmdir()
        for leftover in files.cert.parent.glob("*.tmp"):
            leftover.unlink()


def test_shared_certificate_of_a_many_schools_service(tmp_path):
    service_dir = tmp_path / "service"
    school_dir = service_dir / "schools" / "school-12"
    school_dir.mkdir(parents=True)
    assert not service.shared_by_schools(Settings(state_dir=school_dir))
    (service_dir / "schools.json").write_text('{"schools": []}')
    assert service.shared_by_schools(Settings(state_dir=school_dir))
    assert not service.shared_by_schools(Settings(state_dir=service_dir))


def test_the_page_prepares_refuses_activates_anyway_and_says_restart(tls_app, files, seats, monkeypatch):
    with TestClient(tls_app, base_url="https://127.0.0.1") as client:
        login(client, seats.person("admin"))
        page = client.get(PAGE + "?lang=en")
        assert page.status_code == 200 and "No next certificate is announced" in page.text
        assert cert_fingerprint(files.cert) in page.text and 'href="/server-certificate"' in page.text
        token = csrf_of(page.text)

        assert client.post(PAGE + "/rotate", data={"csrf_token": "wrong"}).status_code == 403
        assert not files.next[0].exists()
        made = client.post(PAGE + "/rotate", data={"csrf_token": token}, follow_redirects=False)
        assert made.status_code == 303 and made.headers["location"] == PAGE + "?done=prepared"
        nxt = cert_fingerprint(files.next[0])
        _report_pins(seats, "lab1-01", [nxt])
        page = client.get(PAGE + "?lang=en")
        assert nxt in page.text
        assert "1 of 2 workstations seen in the last 14 days hold the next certificate" in page.text
        assert "lab1-02" in page.text and "lab2-01" in page.text  # which do not, by room
        assert len(page.content) < 100_000

        twice = client.post(PAGE + "/rotate", data={"csrf_token": token})
        assert twice.status_code == 409 and "A next certificate is prepared already" in twice.text
        refused = client.post(PAGE + "/activate?lang=ru", data={"csrf_token": token})
        assert refused.status_code == 409 and "lab1-02" in refused.text
        assert "error-summary" in refused.text and 'href="#f-anyway"' in refused.text
        assert "Активировать всё равно" in refused.text
        assert cert_fingerprint(files.next[0]) == nxt  # nothing changed

        done = client.post(PAGE + "/activate", data={"csrf_token": token, "anyway": "yes"},
                           follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == PAGE + "?done=activated"
        assert cert_fingerprint(files.cert) == nxt
        for lang, words in (("en", "systemctl restart kalkan-server"), ("ky", "Серверди азыр кайра"),
                            ("ru", "Перезапустите сервер")):
            after = client.get(f"{PAGE}?done=activated&lang={lang}")
            assert 'id="restart"' in after.text and words in after.text, lang
            assert "systemctl restart kalkan-server" in after.text

        # as under `kalkan-server run`, which remembers the certificate it started with
        monkeypatch.setenv(SERVED_ENV, files.previous[0].read_text())
        pending = client.get(PAGE + "?lang=en")
        assert 'id="restart"' in pending.text and 'id="restart-first"' in pending.text
        assert 'action="/server-certificate/rotate"' not in pending.text
        early = client.post(PAGE + "/rotate", data={"csrf_token": token})
        assert early.status_code == 409 and "has not been restarted" in early.text
        assert not files.next[0].exists()
        monkeypatch.delenv(SERVED_ENV)

        nothing = client.post(PAGE + "/cancel?lang=en", data={"csrf_token": token})
        assert nothing.status_code == 409 and "There is no next certificate to withdraw" in nothing.text
    assert _audit(seats, "tls.activated")[-1].actor.startswith("admin-")


@pytest.mark.parametrize("role", ["director", "district", "teacher"])
def test_only_the_responsible_person(tls_app, files, seats, role):
    with TestClient(tls_app, base_url="https://127.0.0.1") as client:
        login(client, seats.person(role))
        home = client.get("/incidents")
        assert 'href="/server-certificate"' not in home.text
        assert client.get(PAGE).status_code == 403
        for action in ("rotate", "activate", "cancel"):
            answer = client.post(f"{PAGE}/{action}", data={"csrf_token": csrf_of(home.text)})
            assert answer.status_code == 403, action
    assert not files.next[0].exists()


def test_without_tls_there_is_nothing_to_change(client, school):
    login(client, school.person("admin"))
    page = client.get(PAGE + "?lang=en")
    assert page.status_code == 200 and "does not serve HTTPS itself" in page.text
    assert 'action="/server-certificate/rotate"' not in page.text
    refused = client.post(PAGE + "/rotate", data={"csrf_token": csrf_of(page.text)})
    assert refused.status_code == 409 and "does not serve HTTPS itself" in refused.text
