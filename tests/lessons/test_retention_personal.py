"""Retention (001 §2.15) of the two records that named a student for ever: the class teacher's
notices (a lesson's repeated attempts, a new incident about a student of the class; 001 §2.7)
and the audit of a teacher's lesson actions (ban, unban, lock, unlock of one seat; the audit
log itself stays, 004 §3.6).  Made through the real routes, aged, then `apply_retention`
with the days the server uses: old ones lose the name, account and seat and keep the rest;
recent ones stay whole; a second run changes nothing.  SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, func, select, update

from policy_server import protocol
from policy_server.db.models import AuditRecord, PolicyVersion, utcnow
from policy_server.db.retention import apply_retention, plan_retention
from tests.lessons.test_class_teacher_notice import bypass

AGED = timedelta(days=120)
NAME = "Асан Үсөнов"
SAYS_WHY = {"ky": "окуучунун аты, аккаунту жана орду бул билдирүүдөн алынып салынды",
            "ru": "имя ученика, учётная запись и место убраны из этого уведомления",
            "en": "the student's name, account and seat were taken out of this notice"}


def blocked(os_user: str | None, seat: str) -> protocol.EventEnvelope:
    return protocol.make_event("web.blocked", {"url": "https://games.example/x", "host": "games.example"},
                               subject=protocol.Subject(os_user=os_user, seat=seat))


def _apply(school):
    with school.db() as db:
        plan = apply_retention(db, actor="test", days=90)
        db.commit()
        return plan


def _notices(school) -> dict[int, tuple]:
    from policy_server.notices.models import Notice

    with school.db() as db:
        return {n.id: (n.person_id, n.kind, n.subject, n.body, n.link, n.params, n.personal_removed_at)
                for n in db.scalars(select(Notice))}


def _bodies(school) -> dict[int, str]:
    from policy_server.notices.models import Notice

    with school.db() as db:
        return dict(db.execute(select(Notice.id, Notice.body)).all())


def _class_teachers(school) -> None:
    from policy_server.db.models import Person, PersonClass
    from policy_server.school.service import find_room
    from policy_server.scope import viewer_for
    from policy_server.timetable.service import ensure_class, set_seating, set_student_account

    school.user("teacher", "ct7b", language="ru")
    school.user("teacher", "ct8a", language="en")
    with school.db() as db:
        people = {p.username: p for p in db.scalars(select(Person))}
        boss = viewer_for(db, people["boss"])
        c7b, c8a = ensure_class(db, "7-Б"), ensure_class(db, "8-А")
        db.add_all([PersonClass(person_id=people["ct7b"].id, class_id=c7b.id, class_teacher=True),
                    PersonClass(person_id=people["ct8a"].id, class_id=c8a.id, class_teacher=True)])
        set_seating(db, boss, class_id=c7b.id, room_id=find_room(db, "lab-1").id, seat="s3", student=NAME)
        set_student_account(db, boss, os_user="st7b", school_class="7-Б")
        db.commit()


def _aged_notices(school) -> str:
    """The class teachers' notices of a lesson's repeated attempts (boss, ct7b) and of
    incidents (the bypass of st7b, the blocked attempts), all made four months ago, and one
    stored before revision 0306 (no params: its text the only record); the lesson's id."""
    from policy_server.notices.models import Notice

    _class_teachers(school)
    csrf = school.login("aigul")
    lesson_id = school.client.post("/api/v1/lessons", json={}, headers=csrf).json()["id"]
    school.post(school.agents[("lab-1", "s1")][1], *[blocked("pupil1", "s1") for _ in range(6)])
    school.post(school.agents[("lab-1", "s3")][1], *[blocked(None, "s3") for _ in range(5)])
    assert school.client.post(f"/api/v1/lessons/{lesson_id}/end", headers=csrf).status_code == 200
    school.post(school.agents[("lab-2", "s1")][1], *[bypass("st7b", "s1", m) for m in (3, 2, 1)])
    with school.db() as db:
        db.execute(update(Notice).values(created_at=utcnow() - AGED))
        repeated = list(db.scalars(select(Notice).where(Notice.kind == "lesson.repeated_attempts")))
        assert len(repeated) == 2 and all(f"pupil1 (6), {NAME} (5)" in n.body for n in repeated)
        db.add(Notice(person_id=repeated[0].person_id, kind="lesson.repeated_attempts",
                      subject=repeated[0].subject, body=repeated[0].body, link=f"/lessons/{lesson_id}",
                      created_at=utcnow() - AGED))  # (params: the column's default, empty)
        db.commit()
    return lesson_id


def test_old_class_teacher_notices_lose_the_student_recent_ones_stay(school, now_periods):
    _aged_notices(school)
    # a recent incident about another class's student: its notice stays whole
    school.post(school.agents[("lab-2", "s2")][1], *[bypass("shared", "s2", m) for m in (3, 2, 1)])
    bodies = _bodies(school)
    (recent_id,) = [i for i, body in bodies.items() if "shared" in body]
    assert sum(any(who in body for who in ("pupil1", NAME, "st7b")) for body in bodies.values()) >= 4

    _apply(school)
    after = _bodies(school)
    named = [(i, body) for i, body in after.items() if any(who in body for who in ("pupil1", NAME, "st7b"))]
    assert not named, named  # (the code before this change left every one as it was)
    assert after[recent_id] == bodies[recent_id]
    lessons = [body for i, body in after.items() if body != bodies[i] and "lab-1" in body]
    assert len(lessons) == 3 and all("7-Б" in body and "6, 5" in body for body in lessons), lessons
    before = _notices(school)
    recent = {recent_id: before[recent_id]}
    _apply(school)  # done once: a second run changes nothing
    assert _notices(school) == before

    for notice_id, (_person, kind, subject, body, _link, params, removed_at) in before.items():
        if notice_id in recent:
            assert removed_at is None and "shared" in str(params)
            continue
        assert removed_at is not None and body == after[notice_id]
        for who in ("pupil1", NAME, "Асан", "st7b", " s1", " s3"):
            assert who not in str(params), (who, params)
        if kind == "incident.class_teacher":
            assert "7-Б" in subject and "№" in body and body.startswith("Ученик вашего класса: "), body
    with school.db() as db:
        assert plan_retention(db, days=90).notices_depersonalised == 0

    for lang in ("ky", "ru", "en"):  # the page names nobody and says why
        for who, gone in (("ct7b", "st7b"), ("boss", "pupil1")):
            school.login(who)
            page = school.client.get(f"/notices?lang={lang}")
            assert page.status_code == 200 and SAYS_WHY[lang] in page.text and gone not in page.text
            assert NAME not in page.text
    school.login("ct8a")
    page = school.client.get("/notices?lang=en").text
    assert "shared" in page and SAYS_WHY["en"] not in page
    (recent_json,) = school.client.get("/api/v1/notices").json()["notices"]
    assert recent_json["personal_removed_at"] is None
    school.login("ct7b")
    assert all(n["personal_removed_at"] and "st7b" not in n["body"]
               for n in school.client.get("/api/v1/notices").json()["notices"])


def test_the_retention_plan_counts_the_notices_it_would_change(school, now_periods):
    _aged_notices(school)
    with school.db() as db:
        from policy_server.notices.models import Notice

        naming = db.scalar(select(func.count()).select_from(Notice))
        plan = plan_retention(db, days=90)
        assert plan.notices_depersonalised == naming and plan.anything
        assert any(line.startswith("  class teachers' notices losing") and line.endswith(f": {naming}")
                   for line in plan.lines())
    assert _apply(school).notices_depersonalised == naming
    with school.db() as db:
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["notices_depersonalised"] == naming


def _audit(school) -> dict[int, tuple]:
    with school.db() as db:
        return {r.id: (r.actor, r.action, r.target, r.detail) for r in db.scalars(
            select(AuditRecord).where(AuditRecord.action != "retention.applied"))}


def _comments(school) -> dict[int, str]:
    with school.db() as db:
        return dict(db.execute(select(PolicyVersion.version, PolicyVersion.comment)).all())


def _scrubbed(comment: str, lesson_id: str) -> str:
    """What retention must make of an aged amendment's comment (the recent ban s3 stays)."""
    for verb in ("ban", "unban", "lock", "unlock"):
        prefix = f"lesson {lesson_id}: {verb} "
        if comment.startswith(prefix) and comment[len(prefix):] not in ("*", "all", "s3"):
            return prefix.rstrip()
    return comment


def test_old_lesson_action_audit_loses_the_seat_and_account_recent_stays(school, now_periods):
    csrf = school.login("aigul")
    lesson_id = school.client.post("/api/v1/lessons", json={}, headers=csrf).json()["id"]
    lesson = f"/api/v1/lessons/{lesson_id}"
    ban_id = school.client.post(f"{lesson}/bans", json={"seat": "s2", "reason": "games"},
                                headers=csrf).json()["ban_id"]
    assert school.client.post(f"{lesson}/bans", json={"os_user": "pupil7"}, headers=csrf).status_code == 200
    assert school.client.delete(f"{lesson}/bans/{ban_id}", headers=csrf).status_code == 200
    for path, body in (("lock", {"seat": "s1"}), ("unlock", {"seat": "s1"}), ("lock", {}), ("unlock", {})):
        assert school.client.post(f"{lesson}/{path}", json=body, headers=csrf).status_code == 200, path
    with school.db() as db:  # all of it four months old
        for record in db.scalars(select(AuditRecord)):
            record.at -= AGED
        for version in db.scalars(select(PolicyVersion)):
            version.created_at -= AGED
        db.commit()
    recent = school.client.post(f"{lesson}/bans", json={"seat": "s3"}, headers=csrf)  # a recent ban
    assert recent.status_code == 200
    before, comments_before = _audit(school), _comments(school)
    old_ban = next(i for i, r in before.items() if r[1] == "lesson.ban" and r[3]["os_user"] == "pupil7")
    assert f"lesson {lesson_id}: ban pupil7" in comments_before.values()

    plan = _apply(school)
    after, comments = _audit(school), _comments(school)
    for record_id, (actor, action, target, detail) in after.items():
        old = before[record_id]
        assert (actor, action, target) == old[:3]  # who acted, what, on which lesson: kept
        if action == "policy.amend":
            expected = _scrubbed(old[3]["comment"], lesson_id)
            if expected == old[3]["comment"]:
                assert detail == old[3]
            else:
                assert detail == {**old[3], "comment": expected, "personal_removed": True}
        elif action.startswith("lesson.") and (old[3].get("seat") not in (None, "*", "s3")
                                               or old[3].get("os_user")):
            assert detail == {**old[3], "seat": None, **({"os_user": None} if "os_user" in old[3] else {}),
                              "personal_removed": True}
            assert "pupil7" not in str(detail) and "s2" not in str(detail) and "'s1'" not in str(detail)
        else:
            assert detail == old[3], (action, detail)  # whole-room lock, the unban by id, the recent ban
    assert after[old_ban][3]["ban"] == before[old_ban][3]["ban"] and after[old_ban][3]["os_user"] is None
    assert comments == {v: _scrubbed(c, lesson_id) for v, c in comments_before.items()}
    texts = set(comments.values())
    assert {f"lesson {lesson_id}: {c}" for c in ("ban s3", "lock *", "unlock all", "ban", "unban")} <= texts
    assert not any("pupil7" in c or c.endswith(" s2") for c in texts)
    # ban s2, ban pupil7, lock s1, unlock s1; the policy amendments of those and of the unban
    assert (plan.audit_records_scrubbed, plan.policy_comments_scrubbed) == (4 + 5, 5)

    with school.db() as db:
        again = plan_retention(db, days=90)
        assert (again.audit_records_scrubbed, again.policy_comments_scrubbed) == (0, 0)
    _apply(school)
    assert _audit(school) == after and _comments(school) == comments


def _bundles(school) -> dict[int, tuple[str, dict]]:
    with school.db() as db:
        return {v.version: (v.content_hash, v.bundle) for v in db.scalars(select(PolicyVersion))}


def _without_students(bundle: dict) -> dict:
    """What retention must make of an old, not-current version's bundle."""
    return {**bundle, "bans": [{**b, "seat": None, "os_user": None, "reason": ""} for b in bundle["bans"]],
            "lessons": [{**le, "locked_seats": [s for s in le["locked_seats"] if s == "*"]}
                        for le in bundle["lessons"]]}


def _names_a_student(bundle: dict) -> bool:
    return any(b["seat"] or b["os_user"] or b["reason"] for b in bundle["bans"]) or any(
        s != "*" for le in bundle["lessons"] for s in le["locked_seats"])


def test_old_policy_versions_lose_the_bans_students_the_one_in_force_stays(school, now_periods):
    csrf = school.login("boss")  # the responsible person's ban outside a lesson, every room
    until = (utcnow() + timedelta(days=20)).isoformat()
    assert school.client.post("/api/v1/bans", json={"os_user": "pupil9", "until": until, "reason": "hacking"},
                              headers=csrf).status_code == 200
    csrf = school.login("aigul")
    lesson_id = school.client.post("/api/v1/lessons", json={}, headers=csrf).json()["id"]
    lesson = f"/api/v1/lessons/{lesson_id}"
    assert school.client.post(f"{lesson}/bans", json={"seat": "s2", "reason": "games"},
                              headers=csrf).status_code == 200
    assert school.client.post(f"{lesson}/bans", json={"os_user": "pupil7", "reason": "chat"},
                              headers=csrf).status_code == 200
    assert school.client.post(f"{lesson}/lock", json={"seat": "s1"}, headers=csrf).status_code == 200
    with school.db() as db:  # all of it four months old
        for version in db.scalars(select(PolicyVersion)):
            version.created_at -= AGED
        db.commit()
    before = _bundles(school)
    newest = max(before)
    naming = [v for v, (_h, b) in before.items() if _names_a_student(b) and v != newest]
    assert len(naming) >= 3, before  # the versions with the bans and the lock (the code before: kept)
    in_force = before[newest][1]
    assert {(b["seat"], b["os_user"], b["reason"]) for b in in_force["bans"]} == {
        (None, "pupil9", "hacking"), ("s2", None, "games"), (None, "pupil7", "chat")}

    with school.db() as db:
        assert plan_retention(db, days=90).policy_bundles_scrubbed == len(naming)
    plan = _apply(school)
    assert plan.policy_bundles_scrubbed == len(naming)
    after = _bundles(school)
    for version, (content_hash, bundle) in after.items():
        assert content_hash == before[version][0]  # what was sent to the agents then
        if version == newest:
            assert bundle == in_force  # the version in force: its bans keep working, whole
        else:
            assert bundle == _without_students(before[version][1]), version
            assert not _names_a_student(bundle)
    scrubbed = after[naming[-1]][1]
    assert {(b["id"], b["by"], b["room"], b["lesson_id"], b["until"]) for b in scrubbed["bans"]} == {
        (b["id"], b["by"], b["room"], b["lesson_id"], b["until"]) for b in before[naming[-1]][1]["bans"]}
    assert any(b["lesson_id"] is None for b in scrubbed["bans"])  # the responsible person's, the same
    with school.db() as db:
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["policy_bundles_scrubbed"] == len(naming)
        assert any(line.startswith("  old policy versions losing") for line in plan_retention(db).lines())
    # the agents still get the ban in force
    agent = school.agents[("lab-1", "s2")][1]
    policy = school.client.get("/api/v1/policy", headers=agent).json()
    assert {b["seat"] for b in policy["bans"]} >= {"s2"}

    # recent versions: a ban now and the lock lifted; the old newest is no longer in force
    assert school.client.post(f"{lesson}/bans", json={"seat": "s3", "reason": "noise"},
                              headers=csrf).status_code == 200
    assert school.client.post(f"{lesson}/unlock", json={"seat": "s1"}, headers=csrf).status_code == 200
    recent = {v: b for v, b in _bundles(school).items() if v > newest}
    assert len(recent) == 2 and all(_names_a_student(b[1]) for b in recent.values())
    assert _apply(school).policy_bundles_scrubbed == 1  # the old one that was in force
    again = _bundles(school)
    assert again[newest][1] == _without_students(in_force) and again[newest][0] == before[newest][0]
    assert {v: b for v, b in again.items() if v > newest} == recent  # recent ones stay whole
    with school.db() as db:
        assert plan_retention(db, days=90).policy_bundles_scrubbed == 0
        # and the daily run no longer even reads them (its pre-selection by the JSON's text)
        reads = []
        event.listen(db, "loaded_as_persistent", lambda _s, obj: reads.append(obj))
        plan_retention(db, days=90)
        assert not [v for v in reads if isinstance(v, PolicyVersion)], reads
    assert _apply(school).policy_bundles_scrubbed == 0  # done once: a second run changes nothing
    assert _bundles(school) == again

    # the filtering history, its differences and a rollback still work on a scrubbed version
    csrf = school.login("boss")
    for version in (*naming, newest):
        page = school.client.get(f"/filtering/history?version={version}&lang=en")
        assert page.status_code == 200 and "pupil7" not in page.text and "games" not in page.text
    rolled = school.client.post("/filtering/policy/apply", data={
        "csrf_token": csrf["X-CSRF-Token"], "kind": "rollback", "version": str(naming[0])},
        follow_redirects=False)
    assert rolled.status_code == 303 and "done=saved" in rolled.headers["location"], rolled.text
    last = _bundles(school)
    assert max(last) == max(again) + 1 and last[max(last)][1]["filtering"] == again[naming[0]][1]["filtering"]


def test_a_ban_ended_long_ago_leaves_the_policy_in_force_and_every_version(school, now_periods):
    """The version in force kept an ended ban until the policy next changed, and an amendment
    made after the ban ended carried it along: in a school whose policy stays the same the
    student's ban outlived every retention.  Past the days, retention takes it out of the policy
    in force (a new version, pushed as any change) and out of every version that carried it."""
    csrf = school.login("boss")
    soon, later = (utcnow() + timedelta(days=d) for d in (1, 20))
    for who, until in (("pupil9", soon), ("pupil8", later)):
        assert school.client.post("/api/v1/bans", json={"os_user": who, "until": until.isoformat(),
                                                        "reason": "hacking"}, headers=csrf).status_code == 200
    ended_at = (utcnow() - AGED).isoformat()
    with school.db() as db:  # pupil9's ban ended four months ago; the two newest versions are recent
        versions = list(db.scalars(select(PolicyVersion).order_by(PolicyVersion.version)))
        assert len(versions) >= 2
        for version in versions:
            bans = [{**b, "until": ended_at} if b["os_user"] == "pupil9" else b
                    for b in version.bundle["bans"]]
            version.bundle = {**version.bundle, "bans": bans}
        for version in versions[:-2]:
            version.created_at -= AGED
        db.commit()
    before = _bundles(school)
    newest = max(before)
    carrying = [v for v, (_h, b) in before.items() if any(x["os_user"] == "pupil9" for x in b["bans"])]
    old = [v for v, (_h, b) in before.items() if v < newest - 1 and _names_a_student(b)]

    with school.db() as db:
        plan = plan_retention(db, days=90)
        assert (plan.policy_ended_removed, plan.policy_bundles_scrubbed) == (1, len(set(carrying) | set(old)))
        assert any("taken out of the policy in force" in line for line in plan.lines())
    applied = _apply(school)
    assert (applied.policy_ended_removed, applied.policy_bundles_scrubbed) == (
        plan.policy_ended_removed, plan.policy_bundles_scrubbed)
    after = _bundles(school)
    assert max(after) == newest + 1
    in_force = after[newest + 1][1]
    assert [(b["os_user"], b["reason"]) for b in in_force["bans"]] == [("pupil8", "hacking")]  # still working
    for version in carrying:
        assert all(b["os_user"] is None and b["reason"] == "" for b in after[version][1]["bans"]
                   if b["id"] not in {x["id"] for x in in_force["bans"]}), version
        assert after[version][0] == before[version][0]  # the hash sent then stays
    for version in (newest - 1, newest):  # recent: only the ended ban lost its student
        assert [b["os_user"] for b in after[version][1]["bans"]] == [
            None if b["os_user"] == "pupil9" else b["os_user"] for b in before[version][1]["bans"]]
    assert "pupil8" in {b["os_user"] for b in after[newest][1]["bans"]}
    agent = school.agents[("lab-1", "s2")][1]
    policy = school.client.get("/api/v1/policy", headers=agent).json()
    assert policy["version"] == newest + 1 and {b["os_user"] for b in policy["bans"]} == {"pupil8"}
    with school.db() as db:
        row = db.get(PolicyVersion, newest + 1) or db.scalar(
            select(PolicyVersion).where(PolicyVersion.version == newest + 1))
        assert row.comment.startswith("retention: 1 bans and lessons") and "001 §2.15" in row.comment
        record = db.scalar(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["policy_ended_removed"] == 1
    again = _apply(school)  # done once: no second version, nothing more to scrub
    assert (again.policy_ended_removed, again.policy_bundles_scrubbed) == (0, 0)
    assert max(_bundles(school)) == newest + 1
