"""The audit log in the reader's language (004 §3.6), in real Chromium against a real
`kalkan-server run`: a failed and a good sign-in, then the log in ky/ru/en (screenshots
test-artifacts/console-audit-i18n-*.png at 1366×768 and 390 px) and its CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest

from tests.console.test_console_browser import log_in, shoot
from tests.support.server import KalkanServerProcess

PASSWORD = "audit-pass-9"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KalkanServerProcess]:
    with KalkanServerProcess(tmp_path_factory.mktemp("audit-server")) as running:
        running.create_user("admin", "rp.admin", PASSWORD, full_name="Responsible Person")
        yield running


def test_the_audit_log_reads_in_kyrgyz_russian_and_english(server, browser, artifacts_dir):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    log_in(page, server, "rp.admin", "not-the-password")  # person.login_failed, why=wrong_password
    log_in(page, server, "rp.admin", PASSWORD)
    assert "/login" not in page.url

    page.goto(server.url + "/audit?what=person.login_failed&lang=ky")
    row = page.inner_text("table.list tbody tr")
    assert "Ийгиликсиз кирүү аракети" in row  # the action's title
    details = page.inner_text("table.list tbody tr dl.facts").split("\n")  # its details, key by key
    assert [line.strip() for line in details] == [
        "дарек", "127.0.0.1", "аркылуу", "кирүү барагы", "себеби", "туура эмес сырсөз"]
    assert "wrong_password" not in row and "via:" not in row and "{" not in row
    assert "person.login_failed" in row  # the code stays, small, for the "what" filter

    page.goto(server.url + "/audit?lang=ru")
    text = page.inner_text("main")
    assert "Неудачная попытка входа" in text and "Вход в систему" in text
    assert "причина" in text and "неверный пароль" in text
    page.goto(server.url + "/audit?lang=en")
    assert "wrong password" in page.inner_text("main")

    page.goto(server.url + "/audit")
    shoot(page, artifacts_dir, "audit-i18n")  # ky/ru/en × 1366 and 390 px, each fits the width

    # the CSV: machine columns as they were, then the same row for a person to read
    answer = page.request.get(server.url + "/audit.csv?what=person.login_failed&lang=ky")
    assert answer.ok
    rows = list(csv.reader(io.StringIO(answer.text().lstrip("\ufeff"))))
    assert rows[0][:5] == ["at_utc", "actor", "action", "target", "detail"]
    assert len(rows[0]) == 7 and rows[0][6] == "Толугураак"  # the human columns, named in ky
    (row,) = rows[1:]
    assert row[2] == "person.login_failed"
    assert json.loads(row[4])["why"] == "wrong_password"
    assert row[5] == "Ийгиликсиз кирүү аракети"
    assert "себеби: туура эмес сырсөз" in row[6]
    context.close()
