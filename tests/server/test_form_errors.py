"""A POST form with a value the route refuses (FastAPI's RequestValidationError) answers the
console's error page — GOV.UK-style summary, in the reader's language, naming the field and
the fix — while /api/ routes keep their JSON 422.  Against a real server process."""

from __future__ import annotations

import re

import pytest

from tests.support.server import KalkanServerProcess

PASSWORD = "form-errors-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with KalkanServerProcess(tmp_path_factory.mktemp("form-errors"), tls=False) as running:
        running.create_user("admin", "forms-admin", PASSWORD)
        yield running


@pytest.fixture(scope="module")
def admin(server):
    with server.login("forms-admin", PASSWORD) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/incidents").text).group(1)
        client.form_token = token
        yield client


def _summary(answer) -> list[str]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    box = re.search(r'<div class="error-summary"[^>]*>(.*?)</div>', answer.text, re.S)
    assert box, answer.text
    return [re.sub(r"\s+", " ", item).strip() for item in re.findall(r"<li>(.*?)</li>", box.group(1), re.S)]


@pytest.mark.parametrize("language, heading, line", [
    ("ky", "Ката бар", "Окуянын номери: бүтүн сан жазыңыз, мисалы 12."),
    ("ru", "Есть ошибка", "Номер инцидента: введите целое число, например 12."),
    ("en", "There is a problem", "Incident number: enter a whole number, e.g. 12."),
])
def test_a_bad_number_in_a_form_address_is_the_error_page_in_the_readers_language(admin, language, heading,
                                                                                   line):
    answer = admin.post("/incidents/abc/acknowledge", data={"csrf_token": admin.form_token},
                        headers={"Accept-Language": language, "Referer": f"{admin.base_url}/incidents"})
    assert _summary(answer) == [line]
    assert heading in answer.text
    assert 'href="/incidents"' in answer.text  # the way back to the form
    assert "Traceback" not in answer.text and '"detail"' not in answer.text


def test_a_too_long_value_names_the_field_and_the_limit(admin):
    answer = admin.post("/incidents/1/assign", data={"csrf_token": admin.form_token, "assignee_id": "9" * 40},
                        headers={"Accept-Language": "ru"})
    assert _summary(answer) == ["Исполнитель: слишком длинное значение, сократите его до 32 символов."]


def test_a_number_past_the_range_in_a_form_address(admin):
    answer = admin.post(f"/incidents/{2**40}/resolve", data={"csrf_token": admin.form_token, "reason": "x"},
                        headers={"Accept-Language": "en"})
    (line,) = _summary(answer)
    assert line.startswith("Incident number: enter ") and "or less" in line


def test_the_way_back_never_leaves_the_site(admin):
    answer = admin.post("/incidents/abc/acknowledge", data={"csrf_token": admin.form_token},
                        headers={"Referer": "https://evil.example/phish"})
    assert 'href="/"' in answer.text and "evil.example" not in answer.text


def test_the_api_keeps_its_json_422(admin):
    answer = admin.post("/api/v1/incidents/abc/ack")
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == "request.invalid" and "incident_id" in body["detail"]
