"""Enrolment codes, the policy bundle with ETag/304, and policy changes made by people."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from policy_server import protocol
from policy_server.db.models import EnrollmentCode, PolicyVersion, Workstation


def test_enrolment_stores_only_hashes_and_refuses_bad_codes(api):
    code = api.code(uses=1)
    r = api.client.post("/api/v1/enroll", json={"code": code.lower().replace("-", ""), "hostname": "pc-01"})
    assert r.status_code == 200, r.text  # typed without dashes, lower case: still the code
    token = r.json()["token"]
    assert r.json()["room"] == "lab-1" and r.json()["school"] == "Test School"
    with api.db() as db:
        ws = db.scalar(select(Workstation))
        assert token not in ws.token_hash and len(ws.token_hash) == 64
        assert code not in db.scalar(select(EnrollmentCode.code_hash))
    used = api.client.post("/api/v1/enroll", json={"code": code, "hostname": "pc-02"})
    assert used.status_code == 403 and "used up" in used.json()["detail"]
    wrong = api.client.post("/api/v1/enroll", json={"code": "AAAA-BBBB-CCCC", "hostname": "pc-02"})
    assert wrong.status_code == 403 and "not known" in wrong.json()["detail"]
    expired_code = api.code(expires="1m")
    with api.db() as db:
        for row in db.scalars(select(EnrollmentCode)):
            row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
        db.commit()
    expired = api.client.post("/api/v1/enroll", json={"code": expired_code, "hostname": "pc-03"})
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    missing = api.client.post("/api/v1/enroll", json={"hostname": "pc-03"})
    assert missing.status_code == 422 and "code: Field required" in missing.json()["detail"]
    with api.db() as db:
        assert len(db.scalars(select(Workstation)).all()) == 1  # nothing half-made by the refusals


def test_policy_etag_and_304(api):
    _, auth = api.enroll()
    first = api.client.get("/api/v1/policy", headers=auth)
    assert first.status_code == 200 and first.json()["version"] == 0
    etag = first.headers["etag"]
    assert api.client.get("/api/v1/policy", headers={**auth, "If-None-Match": etag}).status_code == 304
    from policy_server.policies.service import amend_policy

    with api.db() as db:
        amend_policy(
            db,
            actor="test",
            comment="block a site",
            change=lambda b: b.model_copy(
                update={"filtering": b.filtering.model_copy(update={"block_list": ["bad.example"]})}
            ),
        )
        db.commit()
    second = api.client.get("/api/v1/policy", headers={**auth, "If-None-Match": etag})
    assert second.status_code == 200 and second.headers["etag"] != etag
    bundle = protocol.PolicyBundle.model_validate(second.json())
    assert bundle.version == 1 and bundle.filtering.block_list == ["bad.example"]
    assert bundle.content_hash == bundle.compute_hash()


def test_invalid_policy_change_is_refused_and_not_stored(api):
    from policy_server.errors import InvalidInput
    from policy_server.policies.service import amend_policy

    def bad(b: protocol.PolicyBundle) -> protocol.PolicyBundle:
        return b.model_copy(update={"antivirus": b.antivirus.model_copy(update={"scan_day": 9})})

    with api.db() as db:
        try:
            amend_policy(db, actor="test", comment="bad", change=bad)
        except InvalidInput as exc:
            assert "scan_day" in exc.message
        else:
            raise AssertionError("an invalid bundle was accepted")
        db.rollback()
        assert db.scalar(select(PolicyVersion)) is None


def test_usb_allow_and_integrity_accept_from_events(api):
    _, auth = api.enroll()
    usb = protocol.make_event(
        "usb.blocked",
        {"device": {"vendor_id": "0781", "product_id": "5567", "serial": "ABC", "kinds": ["storage"]}},
    )
    change = protocol.make_event(
        "integrity.changed", {"path": "/usr/bin/x", "change": "modified", "new_sha256": "ab" * 32}
    )
    api.post(auth, usb, change)
    api.user("admin", "boss")
    csrf = api.login("boss")
    r = api.client.post(
        "/api/v1/usb/allow", json={"event_id": str(usb.id), "note": "teacher's stick"}, headers=csrf
    )
    assert r.status_code == 200, r.text
    assert r.json()["usb_allow"][0]["serial"] == "ABC"
    r = api.client.post("/api/v1/usb/allow", json={"vendor_id": "XYZ1", "product_id": "0001"}, headers=csrf)
    assert r.status_code == 422 and "4 hex digits" in r.json()["detail"]
    r = api.client.post("/api/v1/usb/allow", json={"event_id": str(change.id)}, headers=csrf)
    assert r.status_code == 422 and "integrity.changed" in r.json()["detail"]
    r = api.client.post("/api/v1/integrity/accept", json={"event_id": str(change.id)}, headers=csrf)
    assert r.status_code == 200
    bundle = protocol.PolicyBundle.model_validate(api.client.get("/api/v1/policy", headers=auth).json())
    assert bundle.version == 2
    assert [(a.path, a.sha256, a.by) for a in bundle.integrity.accepted] == [
        ("/usr/bin/x", "ab" * 32, "boss")
    ]


def test_teacher_bans_only_during_own_lesson_in_own_room(api):
    """Lessons and their bans moved to policy_server/lessons (tests/lessons has the rest)."""
    api.enroll("pc-01", seat="seat-1", room="lab-1")
    api.enroll("pc-09", seat="seat-9", room="lab-2")
    api.user("teacher", "aigul")
    with api.db() as db:
        from policy_server.db.models import Person, PersonRoom, Room

        db.add(PersonRoom(person_id=db.query(Person).filter_by(username="aigul").one().id,
                          room_id=db.query(Room).filter_by(name="lab-1").one().id))
        db.commit()
    csrf = api.login("aigul")
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = api.client.post("/api/v1/bans", json={"seat": "seat-1", "until": until}, headers=csrf)
    assert r.status_code == 403 and "during their own lesson" in r.json()["detail"]
    r = api.client.post(
        "/api/v1/lessons",
        json={"room": "lab-1", "ends_at": until, "mode": "allow_list", "allow_list": ["edu.kg"]},
        headers=csrf,
    )
    assert r.status_code == 200, r.text
    lesson_id = r.json()["lesson_id"]
    r = api.client.post("/api/v1/bans", json={"seat": "seat-9", "until": until}, headers=csrf)
    assert r.status_code == 403 and "seat-9" in r.json()["detail"]
    r = api.client.post(
        "/api/v1/bans", json={"seat": "seat-1", "until": until, "reason": "games"}, headers=csrf
    )
    assert r.status_code == 200
    ban_id = r.json()["ban_id"]
    with api.db() as db:
        from policy_server.policies.service import current_bundle

        bundle = current_bundle(db)
    assert [(b.seat, b.by) for b in bundle.bans] == [("seat-1", "aigul")]
    assert [les.mode for les in bundle.lessons] == ["allow_list"]
    assert api.client.delete(f"/api/v1/bans/{ban_id}", headers=csrf).status_code == 200
    assert api.client.delete(f"/api/v1/lessons/{lesson_id}", headers=csrf).status_code == 200
    api.user("director", "dir")
    csrf = api.login("dir")
    assert (
        api.client.post("/api/v1/bans", json={"seat": "seat-1", "until": until}, headers=csrf).status_code
        == 403
    )


def test_isuo_log_is_admin_only(api):
    api.user("teacher", "aigul")
    api.login("aigul")
    assert api.client.get("/api/v1/isuo/access").status_code == 403
    api.user("admin", "boss")
    api.login("boss")
    assert api.client.get("/api/v1/isuo/access").json() == {"access": []}


def test_login_errors(api):
    api.user("admin", "boss")
    r = api.client.post("/api/v1/login", json={"username": "boss", "password": "wrong password"})
    assert r.status_code == 401 and "wrong username or password" in r.json()["detail"]
    r = api.client.post("/api/v1/login", json={"username": "ghost", "password": "wrong password"})
    assert r.status_code == 401
    from policy_server.people.service import disable_person

    with api.db() as db:
        disable_person(db, username="boss", actor="test")
        db.commit()
    from tests.server.conftest import PASSWORD

    r = api.client.post("/api/v1/login", json={"username": "boss", "password": PASSWORD})
    assert r.status_code == 401
