"""The responsible person's filtering console, in process on SQLite (issue 12, parts 2–4):
the starting policy, the editor (difference before saving, clause, versioned, rollback),
bad input refused whole with the line named, "try a URL", the report queue and the seat's
report status, expiring allows."""

from __future__ import annotations

import json
import re
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.artifacts import report_key
from policy_server import protocol
from policy_server.app import create_app
from policy_server.db.models import utcnow
from policy_server.settings import Settings
from tests.support.postgres import postgres_cluster  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "ut1" / "ut1-small.tar.gz"
PASSWORD = "correct horse battery"


def fixture_entry(folder: str, n: int = 0) -> str:
    with tarfile.open(FIXTURE) as tar:
        return tar.extractfile(f"blacklists/{folder}/domains").read().decode().split()[n]


class Console:
    def __init__(self, app, client: TestClient) -> None:
        self.app, self.client = app, client
        self.csrf = ""

    def db(self):
        return self.app.state.sessionmaker()

    def bundle(self) -> protocol.PolicyBundle:
        from policy_server.policies.service import current_bundle

        with self.db() as db:
            return current_bundle(db)

    def login(self, username: str) -> None:
        self.client.cookies.clear()
        r = self.client.post("/api/v1/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]

    def preview_and_save(self, data: dict, files=None) -> str:
        r = self.client.post(
            "/filtering/policy/preview?lang=en", data={"csrf_token": self.csrf, **data}, files=files
        )
        assert r.status_code == 200, r.text
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', r.text))
        textarea = re.search(r'<textarea name="entries" hidden>(.*?)</textarea>', r.text, re.S)
        if textarea:
            fields["entries"] = textarea.group(1)
        import html

        fields = {k: html.unescape(v) for k, v in fields.items()}
        saved = self.client.post("/filtering/policy/apply", data=fields, follow_redirects=False)
        assert saved.status_code == 303, saved.text
        return r.text

    def enroll(self, seat: str) -> dict:
        from policy_server.agents.service import create_enrollment_code
        from policy_server.school.service import ensure_room, ensure_school

        with self.db() as db:
            ensure_school(db, name="Test School", actor="test")
            ensure_room(db, name="lab-1", actor="test")
            code = create_enrollment_code(db, actor="test", room="lab-1", uses=1)
            db.commit()
        r = self.client.post("/api/v1/enroll", json={"code": code, "hostname": f"pc-{seat}", "seat": seat})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def send(self, headers: dict, seat: str, event_type: str, data: dict) -> None:
        event = protocol.make_event(event_type, data, subject=protocol.Subject(seat=seat, os_user="pupil"))
        r = self.client.post(
            "/api/v1/events", json={"events": [event.model_dump(mode="json")]}, headers=headers
        )
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def console(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    if request.param == "sqlite":
        db_url = f"sqlite:///{root / 'k.sqlite'}"
    else:
        db_url = request.getfixturevalue("postgres_cluster").create_database()
    app = create_app(Settings(state_dir=root / "state", db_url=db_url, tls=False))
    with TestClient(app) as client:
        c = Console(app, client)
        from policy_server.filtering.lists import update_lists
        from policy_server.people.service import create_person

        with c.db() as db:
            create_person(db, username="admin", role="admin", password=PASSWORD, actor="test")
            create_person(db, username="teach", role="teacher", password=PASSWORD, actor="test")
            update_lists(db, state_dir=root / "state", actor="test", source=str(FIXTURE))
            db.commit()
        c.login("admin")
        yield c


def test_only_the_responsible_person_gets_the_pages(console) -> None:
    console.client.cookies.clear()
    r = console.client.get("/filtering/queue", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    console.login("teach")
    assert console.client.get("/filtering/policy").status_code == 403
    assert console.client.get("/api/v1/filtering/queue").status_code == 403
    console.login("admin")


def test_starting_policy_for_a_kyrgyz_school(console) -> None:
    page = console.preview_and_save({"kind": "starting"})
    assert "000 §8.1, 001 §3.3" in page and "edu.gov.kg" in page  # the difference, with the clause
    b = console.bundle()
    students = b.filtering.category_actions["student"]
    for cat in (
        "dangerous",
        "drugs",
        "alcohol_tobacco",
        "violence",
        "porn",
        "extremism",
        "hate",
        "gambling",
        "transactions",
    ):
        assert students[cat] == "block", cat
    assert "edu.gov.kg" in b.filtering.allow_list and "resh.edu.ru" in b.filtering.allow_list
    assert "optimabank.kg" in b.filtering.passthrough_hosts and "emis.edu.gov.kg" in b.isuo.hosts
    assert b.filtering.unsupervised["student"] == "allow_list"


def test_matrix_change_shows_the_difference_then_saves_a_version(console) -> None:
    before = console.bundle().version
    form = {"kind": "matrix", "m:teacher:games": "block"}
    # keep the starting policy's choices as they are
    for cat, action in console.bundle().filtering.category_actions.get("student", {}).items():
        form[f"m:student:{cat}"] = action
    page = console.preview_and_save(form)
    assert "filtering.category_actions.teacher.games" in page
    b = console.bundle()
    assert b.version == before + 1 and b.filtering.category_actions["teacher"]["games"] == "block"
    history = console.client.get("/filtering/history").text
    assert "category × group matrix changed (000 §8.1, 001 §3.3)" in history


def test_try_a_url_answers_per_group_with_the_deciding_rule(console) -> None:
    gambling = fixture_entry("gambling", 5)
    r = console.client.post(
        "/api/v1/filtering/try", json={"url": f"https://{gambling}/x"}, headers={"X-CSRF-Token": console.csrf}
    )
    assert r.status_code == 200, r.text
    by_group = {v["group"]: v for v in r.json()["verdicts"]}
    assert by_group["teacher"]["action"] == "block" and by_group["teacher"]["rule"] == "category"
    assert "gambling" in by_group["teacher"]["categories"]
    # students outside a lesson get only the allow-list (001 §2.9)
    assert by_group["student"]["rule"] == "unsupervised.not_on_allow_list"
    page = console.client.get("/filtering/try", params={"url": "edu.gov.kg", "lang": "ru"}).text
    assert 'data-group="student" data-action="allow" data-rule="school.allow_list"' in page


@pytest.mark.parametrize(
    "upload, expected",
    [
        (b"", "the file is empty"),
        ("good.kg\nother.kg\n".encode("utf-16"), "UTF-16"),
        (
            b"||ads.example.kg^\nplain.example.kg\n",
            "line 2: 'plain.example.kg' is a plain line in an AdGuard list",
        ),
        (
            b"fine.kg\n^casino[0-9]+\\.com$\n",
            "line 2: '^casino[0-9]+\\\\.com$' looks like a regular expression",
        ),
    ],
)
def test_bad_list_files_are_refused_whole_naming_the_line(console, upload, expected) -> None:
    before = console.bundle()
    r = console.client.post(
        "/filtering/policy/preview?lang=en",
        data={"csrf_token": console.csrf, "kind": "list", "list": "block_list", "entries": ""},
        files={"file": ("list.txt", upload, "text/plain")},
    )
    assert r.status_code == 422
    text = r.text.replace("&#39;", "'").replace("&#34;", '"').replace("&quot;", '"')
    assert expected in text, text[text.find("error-summary") :][:600]
    assert "Nothing was saved." in text
    assert console.bundle().version == before.version


def test_bad_input_in_russian_names_the_line(console) -> None:
    r = console.client.post(
        "/filtering/policy/preview?lang=ru",
        data={
            "csrf_token": console.csrf,
            "kind": "options",
            "safe_search": "on",
            "site_categories": "ok.kg games\nbad.kg gamez\n",
        },
    )
    assert r.status_code == 422
    assert "строка 2" in r.text and "gamez" in r.text and "Ничего не сохранено" in r.text


def test_upload_then_save_and_roll_back(console) -> None:
    page = console.preview_and_save(
        {"kind": "list", "list": "block_list", "entries": ""},
        files={"file": ("ours.txt", b"# ours\nbad-site.kg\nworse.kg/path\n", "text/plain")},
    )
    assert "+ bad-site.kg" in page and "+ worse.kg/path" in page
    b = console.bundle()
    assert b.filtering.block_list == ["bad-site.kg", "worse.kg/path"]
    version_with_list = b.version
    console.preview_and_save({"kind": "list", "list": "block_list", "entries": "other.kg"})
    assert console.bundle().filtering.block_list == ["other.kg"]
    page = console.preview_and_save({"kind": "rollback", "version": str(version_with_list)})
    assert "− other.kg" in page
    b = console.bundle()
    assert b.filtering.block_list == ["bad-site.kg", "worse.kg/path"] and b.version > version_with_list


def test_reports_fold_into_one_queue_item_decided_in_one_click(console) -> None:
    seat1, seat2 = console.enroll("seat-1"), console.enroll("seat-2")
    console.send(seat1, "seat-1", "web.report", {"url": "http://Reported.example.kg/page", "comment": "bad"})
    console.send(seat2, "seat-2", "web.report", {"url": "reported.example.kg/page"})
    console.send(
        seat2,
        "seat-2",
        "web.unblock_request",
        {
            "url": "https://lesson.example.kg/",
            "categories": ["games"],
            "rule": "category",
            "comment": "for the lesson",
        },
    )
    r = console.client.get("/api/v1/filtering/queue")
    items = {i["url"]: i for i in r.json()["items"]}
    reported = items["http://reported.example.kg/page"]
    assert reported["count"] == 2 and sorted(reported["seats"]) == ["seat-1", "seat-2"]
    assert reported["comments"] == ["bad"]
    unblock = items["https://lesson.example.kg/"]
    assert unblock["kinds"] == ["unblock"] and unblock["rule"] == "category"
    statuses = console.client.get("/api/v1/filtering/reports", headers=seat1).json()["reports"]
    assert statuses[0]["status"] == "received"
    page = console.client.get("/filtering/queue?lang=ky")
    assert page.status_code == 200 and "reported.example.kg" in page.text
    # one click: block for everyone
    before = console.bundle().version
    done = console.client.post(
        "/filtering/queue/decide",
        data={"csrf_token": console.csrf, "quick": f"block:school:{reported['id']}"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    b = console.bundle()
    assert b.version == before + 1 and "reported.example.kg/page" in b.filtering.block_list
    for headers in (seat1, seat2):
        mine = console.client.get("/api/v1/filtering/reports", headers=headers).json()["reports"]
        key = report_key("http://reported.example.kg/page")
        assert {s["status"] for s in mine if s["key"] == key} == {"blocked"}
        assert "reported" not in json.dumps(mine)  # no URLs to the seat (002 §3.1)
    # allow the unblock request on its seat, for an hour
    until = (utcnow() + timedelta(hours=1)).isoformat()
    r = console.client.post(
        "/api/v1/filtering/queue/decide",
        headers={"X-CSRF-Token": console.csrf},
        json={"ids": [unblock["id"]], "action": "allow", "scope": "seat", "until": until},
    )
    assert r.status_code == 200, r.text
    assert console.bundle().filtering.seat_allow_list == {"seat-2": ["lesson.example.kg"]}


def test_reject_needs_a_reason_and_the_seat_sees_it(console) -> None:
    seat = console.enroll("seat-3")
    console.send(seat, "seat-3", "web.report", {"url": "https://fine.example.kg/"})
    item = next(
        i
        for i in console.client.get("/api/v1/filtering/queue").json()["items"]
        if i["url"] == "https://fine.example.kg/"
    )
    page = console.client.post(
        "/filtering/queue/decide",
        data={"csrf_token": console.csrf, "ids": str(item["id"]), "decision": "reject:"},
    )
    assert page.status_code == 422 and "reason" in page.text
    r = console.client.post(
        "/filtering/queue/decide",
        data={
            "csrf_token": console.csrf,
            "ids": str(item["id"]),
            "decision": "reject:",
            "reason": "a news site",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    mine = console.client.get("/api/v1/filtering/reports", headers=seat).json()["reports"]
    assert mine[0]["status"] == "rejected" and mine[0]["reason"] == "a news site"


def test_an_allow_with_an_expiry_is_taken_off_when_it_runs_out(console) -> None:
    from policy_server.filtering.queue import expire_allows

    assert console.bundle().filtering.seat_allow_list["seat-2"] == ["lesson.example.kg"]
    with console.db() as db:
        assert expire_allows(db, utcnow()) == 0
        assert expire_allows(db, utcnow() + timedelta(hours=2)) == 1
        db.commit()
    assert console.bundle().filtering.seat_allow_list["seat-2"] == []


@pytest.mark.parametrize("lang", ["ky", "ru", "en"])
def test_every_page_renders_in_every_language(console, lang) -> None:
    pages = [
        "/filtering/queue?status=all",
        "/filtering/queue",
        "/filtering/history",
        "/filtering/lists",
        "/filtering/try?url=https://edu.gov.kg/",
        *(f"/filtering/policy?part={p}" for p in ("matrix", "lists", "groups", "schedule", "options")),
    ]
    for path in pages:
        r = console.client.get(path + ("&" if "?" in path else "?") + f"lang={lang}")
        assert r.status_code == 200, (path, r.text[:500])
        assert f'<html lang="{lang}">' in r.text
        assert ">None<" not in r.text and "None</" not in r.text, path
        assert len(r.content) < 100_000, (path, len(r.content))
    matrix = console.client.get(f"/filtering/policy?part=matrix&lang={lang}").text
    from filters.categories import CATEGORIES

    for cat in CATEGORIES.values():  # the 33 categories, named in the reader's language, with clauses
        assert cat.name(lang) in matrix


def test_a_teacher_may_allow_an_unblock_request_from_their_room_on_its_seat(console) -> None:
    """The service function the lesson routing calls (queue.decide with the teacher's viewer)."""
    from sqlalchemy import select

    from policy_server.db.models import Person, PersonRoom, Room
    from policy_server.errors import Forbidden
    from policy_server.filtering import queue
    from policy_server.scope import viewer_for

    seat = console.enroll("seat-7")
    console.send(
        seat, "seat-7", "web.unblock_request", {"url": "https://maps.example.kg/", "rule": "category"}
    )
    with console.db() as db:
        teacher = db.scalar(select(Person).where(Person.username == "teach"))
        assert queue.teacher_items(db, viewer=viewer_for(db, teacher)) == []  # no room yet: nothing
        room = db.scalar(select(Room).where(Room.name == "lab-1"))
        db.add(PersonRoom(person_id=teacher.id, room_id=room.id))
        db.commit()
        viewer = viewer_for(db, teacher)
        items = queue.teacher_items(db, viewer=viewer)
        item = next(i for i in items if i.url == "https://maps.example.kg/")
        with pytest.raises(Forbidden):
            queue.decide(db, viewer=viewer, ids=[item.id], action="block", scope="school")
        db.rollback()
        queue.decide(db, viewer=viewer, ids=[item.id], action="allow", scope="seat")
        db.commit()
    assert "maps.example.kg" in console.bundle().filtering.seat_allow_list["seat-7"]
