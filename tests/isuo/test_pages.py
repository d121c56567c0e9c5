"""The ISUO pages through the real app (TestClient, SQLite): forms, errors, scope."""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import select

from policy_server.db.models import AuditRecord, Incident
from policy_server.isuo.models import IsuoReview, IsuoUser
from policy_server.people.service import create_person
from tests.isuo.conftest import csrf_of, login
from tests.web.conftest import PASSWORD

SCAN = b"%PDF-1.4\n% a scanned signed obligation\n"


def person(web_app, role: str, full_name: str = "") -> str:
    username = f"{role}-{uuid.uuid4().hex[:6]}"
    with web_app.state.sessionmaker() as db:
        create_person(db, username=username, role=role, password=PASSWORD, actor="test", full_name=full_name)
        db.commit()
    return username


def test_register_a_person_with_a_scan_and_print_annex_1_1(web_app, client):
    login(client, person(web_app, "admin"))
    form = client.get("/isuo/register/new?lang=en")
    assert form.status_code == 200
    token = csrf_of(form.text)
    bad = client.post(
        "/isuo/register/new",
        data={"csrf_token": token, "full_name": "", "position": "", "isuo_role": "nope", "logins": "a b!"},
    )
    assert bad.status_code == 422 and "There is a problem" in bad.text and 'href="#full_name"' in bad.text
    ok = client.post(
        "/isuo/register/new",
        data={
            "csrf_token": token,
            "full_name": "Asanova Aigul",
            "position": "ISUO specialist",
            "isuo_role": "specialist",
            "logins": "A.Asanova",
            "order_number": "12-k",
            "order_date": "2026-09-01",
        },
        follow_redirects=False,
    )
    assert ok.status_code == 303
    url = ok.headers["location"].split("?")[0]
    page = client.get(url + "?lang=en")
    assert "No signed obligation" in page.text and "a.asanova" in page.text
    missing = client.post(
        url + "/obligation",
        data={"csrf_token": token, "signed_on": "2026-09-02", "instructed_by": "Director"},
    )
    assert missing.status_code == 422 and "personal file" in missing.text
    wrong = client.post(
        url + "/obligation",
        data={"csrf_token": token, "signed_on": "2026-09-02", "instructed_by": "Director"},
        files={"scan": ("o.exe", b"MZ\x90\x00", "application/octet-stream")},
    )
    assert wrong.status_code == 422 and "PDF, JPEG or PNG" in wrong.text
    done = client.post(
        url + "/obligation",
        data={"csrf_token": token, "signed_on": "2026-09-02", "instructed_by": "Director"},
        files={"scan": ("obligation.pdf", SCAN, "application/pdf")},
        follow_redirects=False,
    )
    assert done.status_code == 303
    page = client.get(url + "?lang=en")
    digest = hashlib.sha256(SCAN).hexdigest()
    assert "Obligation signed" in page.text and digest in page.text and "unchanged" in page.text
    assert client.get(url + "/scan").content == SCAN
    kept = web_app.state.settings.state_dir / "isuo" / "obligations" / f"{digest}.pdf"
    assert kept.read_bytes() == SCAN
    for lang, words in (("ru", "ОБЯЗАТЕЛЬСТВО"), ("ky", "МИЛДЕТТЕНМЕСИ")):
        annex = client.get(url + f"/annex/1.1/{lang}")
        assert annex.status_code == 200 and words in annex.text and "Asanova Aigul" in annex.text
        assert "ISUO specialist" in annex.text
    assert "согласие" in client.get(url + "/annex/1.2/ru").text
    assert client.get(url + "/annex/9.9/ru").status_code == 404
    with web_app.state.sessionmaker() as db:
        actions = set(db.scalars(select(AuditRecord.action).where(AuditRecord.action.like("isuo.%"))))
    assert {"isuo.user_created", "isuo.obligation_recorded"} <= actions


def test_scope_director_reads_register_not_the_log_nor_the_consent_names(web_app, client):
    admin = person(web_app, "admin")
    login(client, admin)
    token = csrf_of(client.get("/isuo/settings").text)
    client.post(
        "/isuo/settings/consent",
        data={
            "csrf_token": token,
            "subject_name": "Pupil Name Secret",
            "subject_kind": "student",
            "given_on": "2026-09-01",
            "scope": "ISUO",
        },
    )
    assert "Pupil Name Secret" in client.get("/isuo/settings").text
    client.cookies.clear()
    login(client, person(web_app, "director"))
    register = client.get("/isuo/register?lang=en")
    assert register.status_code == 200 and "Add a person" not in register.text
    assert "Pupil Name Secret" not in register.text and "Student under 16" in register.text
    for url in ("/isuo/log", "/isuo/imports", "/isuo/settings", "/isuo/register/new"):
        assert client.get(url).status_code == 403, url
    client.cookies.clear()
    login(client, person(web_app, "teacher"))
    assert client.get("/isuo/register").status_code == 403
    client.cookies.clear()
    assert client.get("/isuo/register", follow_redirects=False).headers["location"].startswith("/login")


def test_import_with_mapping_then_director_signs_the_review(web_app, client):
    login(client, person(web_app, "admin"))
    token = csrf_of(client.get("/isuo/imports?lang=en").text)  # the language sticks (cookie)
    body = "User,When,What,Address,Kind\nghost.login,2026-11-10 10:00,login,10.0.0.5,session\n"
    mapping = {
        "source_name": "ISUO web",
        "map_login": "User",
        "map_time": "When",
        "map_action": "What",
        "map_ip": "Address",
        "map_record_type": "Kind",
    }
    bad = client.post(
        "/isuo/imports",
        data={"csrf_token": token, **mapping, "map_time": "Time"},
        files={"file": ("e.csv", body.encode(), "text/csv")},
    )
    assert bad.status_code == 422 and "No column Time" in bad.text
    ok = client.post(
        "/isuo/imports",
        data={"csrf_token": token, **mapping},
        files={"file": ("e.csv", body.encode(), "text/csv")},
    )
    assert ok.status_code == 200 and "1 new" in ok.text
    assert 'value="User"' in client.get("/isuo/imports?source=ISUO+web").text  # the mapping is saved
    broken = (
        body + "x.user,not a time,login,10.0.0.5,session\ny.user,2026-11-10 10:00,login,999.1.1.1,session\n"
    )
    rejected = client.post(
        "/isuo/imports?lang=en",
        data={"csrf_token": token, **mapping},
        files={"file": ("e.csv", broken.encode(), "text/csv")},
    )
    assert rejected.status_code == 422 and "2 row(s) need fixing" in rejected.text
    assert "<td>3</td><td>The time not a time is not a date and time.</td>" in rejected.text
    assert "<td>4</td><td>999.1.1.1 is not an IP address.</td>" in rejected.text
    with web_app.state.sessionmaker() as db:
        assert db.scalar(select(Incident).where(Incident.rule == "isuo.unknown_login")) is not None
    log = client.get("/isuo/log?lang=en")
    assert "ghost.login" in log.text and "not in the register" in log.text
    assert "Log out" in log.text  # the page keeps the logged-in header (no context name clash)
    assert client.get("/isuo/log?day=bad").status_code == 200
    assert client.get("/isuo/log?page_number=abc&person=x").status_code == 200  # hand-edited URLs: no 5xx
    assert client.get("/isuo/people/999999").status_code == 404
    assert client.get("/isuo/people/999999/annex/1.1/ru").status_code == 404
    assert client.get("/isuo/nope.css").status_code in (404, 405)
    assert "max-age" in client.get("/isuo/isuo.css").headers["cache-control"]
    client.cookies.clear()
    director = person(web_app, "director", full_name="Director Dir")
    login(client, director)
    page = client.get("/isuo/review?lang=en")
    token = csrf_of(page.text)
    client.post("/isuo/review", data={"csrf_token": token, "term": "2026-2027 / 1"})
    with web_app.state.sessionmaker() as db:
        review = db.scalar(select(IsuoReview).where(IsuoReview.signed_at.is_(None)))
        users = list(db.scalars(select(IsuoUser.id)))
    signature = {
        "csrf_token": token,
        "signer_name": "Director Dir",
        "signed_on": "2026-12-04",
        "next_due_on": "2027-03-01",
    }
    unsigned = client.post(f"/isuo/review/{review.id}/sign", data=signature)
    assert (unsigned.status_code == 422) == bool(users)
    for user_id in users:
        client.post(
            f"/isuo/review/{review.id}/decide",
            data={"csrf_token": token, "user_id": user_id, "decision": "confirm"},
        )
    if users:
        signed = client.post(f"/isuo/review/{review.id}/sign", data=signature, follow_redirects=False)
        assert signed.status_code == 303
    page = client.get("/isuo/review?lang=en")
    assert "signed by Director Dir on 2026-12-04" in page.text and "2027-03-01" in page.text
