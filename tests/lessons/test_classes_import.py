"""The class list (and students' OS accounts → class) from a CSV file, as the timetable import
does: all or nothing, every wrong row named with its line and the fix, in ky/ru/en.  Real app,
real database; the page's form posts as a browser without JavaScript would."""

from __future__ import annotations

from sqlalchemy import select

from tests.lessons.test_pages import web_login


def _classes_and_accounts(school) -> tuple[set[str], dict[str, str]]:
    from policy_server.db.models import SchoolClass
    from policy_server.timetable.models import StudentAccount

    with school.db() as db:
        names = {c.id: c.name for c in db.scalars(select(SchoolClass))}
        accounts = {a.os_user: names[a.class_id] for a in db.scalars(select(StudentAccount))}
        return set(names.values()), accounts


def test_import_the_class_list_with_accounts(school):
    token = web_login(school, "boss")
    text = "\ufeffclass;account\n9-В;\n7-Б;st7b01\n7-Б;st7b02\n\n8-А;st8a01\n"
    r = school.client.post("/timetable/classes/import", data={"csrf_token": token},
                           files={"file": ("classes.csv", text.encode(), "text/csv")}, follow_redirects=False)
    assert r.status_code == 303, r.text
    classes, accounts = _classes_and_accounts(school)
    assert {"9-В", "7-Б", "8-А"} <= classes
    assert accounts == {"st7b01": "7-Б", "st7b02": "7-Б", "st8a01": "8-А"}
    assert r.headers["location"] == "/timetable?done=classes_imported"
    page = school.client.get("/timetable?done=classes_imported&lang=en").text
    assert "The class list is imported." in page and "7-Б: OS accounts: 2" in page
    # a second import moves an account to another class (a student changed class)
    r = school.client.post("/timetable/classes/import", follow_redirects=False,
                           data={"csrf_token": token, "classes_text": "8-А,st7b02"})
    assert r.status_code == 303
    assert _classes_and_accounts(school)[1]["st7b02"] == "8-А"
    # and the class of the account is what the class-teacher notice uses
    from policy_server.timetable.service import class_at

    with school.db() as db:
        from policy_server.db.models import utcnow

        assert class_at(db, os_user="st8a01", agent_id=None, at=utcnow()).name == "8-А"


def test_wrong_rows_are_named_by_line_in_each_language_and_nothing_is_stored(school):
    token = web_login(school, "boss")
    bad = ("7-Б,st01\n"
           "7Б!!,st02\n"           # 2: not a class name
           "7-Б,st 03\n"           # 3: an account with a space
           "7-Б,st04,extra\n"      # 4: three columns
           "8-А,st01\n")           # 5: st01 already in 7-Б on line 1
    expected = {
        "en": ["7Б!! is not a class name", "st 03 is not an OS account name", "has 3 columns",
               "Account st01 is already in class 7-Б on line 1"],
        "ru": ["7Б!! — не название класса", "st 03 — не имя учётной записи ОС",
               "В этой строке 3 столбцов", "Учётная запись st01 уже отнесена к классу 7-Б в строке 1"],
        "ky": ["7Б!! класстын аты эмес", "st 03 — OS аккаунтунун аты эмес", "Бул сапта 3 мамыча бар",
               "st01 аккаунту 1-сапта 7-Б классына берилген"],
    }
    for lang, texts in expected.items():
        r = school.client.post(f"/timetable/classes/import?lang={lang}",
                               data={"csrf_token": token, "classes_text": bad})
        assert r.status_code == 422, r.text[:300]
        body = r.text
        for line, text in zip((2, 3, 4, 5), texts, strict=True):
            assert f"<tr><td>{line}</td><td>" in body and text in body, (lang, line, text)
        assert "<tr><td>1</td>" not in body
        assert "7Б!!,st02" in body  # the pasted rows are kept for fixing
    classes, accounts = _classes_and_accounts(school)
    assert accounts == {} and "7Б!!" not in classes
    # an empty upload: a clear message, not a server error
    r = school.client.post("/timetable/classes/import?lang=ru",
                           data={"csrf_token": token, "classes_text": " \n"})
    assert r.status_code == 422 and "В файле нет строк" in r.text
    # a teacher may not import
    token = web_login(school, "aigul")
    r = school.client.post("/timetable/classes/import", data={"csrf_token": token, "classes_text": "7-Б,x"})
    assert r.status_code in (403, 404)
