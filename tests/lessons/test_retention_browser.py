"""A lesson summary past the retention days, in real Chromium against a real server process:
`kalkan-server retention --apply` (a real process, the server running) takes the students'
names and seats out (001 §2.15); the page keeps the counts and sites, names nobody and says
why, in ky/ru/en at 1366×768 and 390 px (screenshots in test-artifacts/).  The same for the
repeated-attempts notice the lesson sent (/notices)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from policy_server.db.models import utcnow
from tests.conftest import REPO, assert_fits_width
from tests.support.server import KalkanServerProcess

ADMIN = ("boss", "a-long-admin-password")
NAMES = ("Асан Үсөнов", "Бегимай Токтосунова")
SAYS_WHY = {"ky": "окуучулардын аттары жана орундары бул жыйынтыктан алынып салынды",
            "ru": "имена учеников и места убраны из этих итогов",
            "en": "the students' names and seats were taken out of this summary"}
NOTICE_SAYS_WHY = {"ky": "окуучунун аты, аккаунту жана орду бул билдирүүдөн алынып салынды",
                   "ru": "имя ученика, учётная запись и место убраны из этого уведомления",
                   "en": "the student's name, account and seat were taken out of this notice"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with KalkanServerProcess(tmp_path_factory.mktemp("retention-web"), tls=False) as running:
        boss = running.create_user("admin", *ADMIN, full_name="Бактыгүл Осмонова")
        running.enroll("pc-01", seat="s1", room="Lab 1")
        from policy_server.lessons.models import Lesson, LessonBan
        from policy_server.school.service import find_room

        ended = utcnow() - timedelta(days=120)
        with running.db() as db:
            db.add(Lesson(id="oldlesson", room_id=find_room(db, "Lab 1").id, teacher_id=boss,
                          starts_at=ended - timedelta(minutes=45), ends_at=ended, planned_end=ended,
                          summarised_at=ended, summary={
                              "blocked": 9, "blocked_hosts": [["games.example", 6], ["casino.example", 3]],
                              "by_student": {NAMES[0]: 6, NAMES[1]: 3},
                              "requested": [{"who": NAMES[0], "seat": "s1", "host": "maps.example"}],
                              "allowed": ["maps.example"],
                              "banned": [{"seat": "s1", "os_user": "asan", "who": NAMES[0], "lifted": False}],
                              "alerts": [{"who": NAMES[1], "seat": "s2", "host": "search.example",
                                          "lists": ["self-harm"]}],
                              "hands": 1, "repeated": [{"who": NAMES[0], "attempts": 6}],
                              "ended_early": False, "extended_min": 0}))
            db.flush()
            db.add(LessonBan(id="ban1", lesson_id="oldlesson", seat="s1", os_user="asan", reason="games"))
            # the repeated-attempts notice the lesson sent the responsible person (001 §2.7), as old
            from sqlalchemy import update

            from policy_server.lessons.summary import _notify_repeated
            from policy_server.notices.models import Notice

            lesson = db.get(Lesson, "oldlesson")
            _notify_repeated(db, lesson, lesson.summary)
            db.flush()
            db.execute(update(Notice).values(created_at=ended))
            db.commit()
        yield running


def test_an_old_lesson_summary_names_nobody_after_retention(server, browser, artifacts_dir):
    done = subprocess.run([sys.executable, "-m", "policy_server.cli", "retention", "--apply",
                           "--state-dir", str(server.state_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "lesson summaries losing students' names and seats (the counts stay): 1" in done.stdout
    assert "class teachers' notices losing the student's name, account and seat (the counts stay): 1" \
        in done.stdout, done.stdout
    context = browser.new_context(locale="en", viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(server.url + "/login?lang=en")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("form.card button[type=submit]")
    for lang in ("ky", "ru", "en"):
        for width, height in ((1366, 768), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{server.url}/lessons/oldlesson?lang={lang}")
            main = page.inner_text("main")
            assert SAYS_WHY[lang] in main, (lang, main)
            assert not any(name in main for name in NAMES) and "asan" not in main
            assert "games.example" in main and "search.example" in main and "maps.example" in main
            page.screenshot(path=str(artifacts_dir / f"lesson-retention-{lang}-{width}.png"), full_page=True)
            assert_fits_width(page)
            page.goto(f"{server.url}/notices?lang={lang}")  # the notice: room, class, counts; says why
            main = page.inner_text("main")
            assert NOTICE_SAYS_WHY[lang] in main and "Lab 1" in main and "6" in main, (lang, main)
            assert not any(name in main for name in NAMES)
            page.screenshot(path=str(artifacts_dir / f"notice-retention-{lang}-{width}.png"), full_page=True)
            assert_fits_width(page)
    context.close()
