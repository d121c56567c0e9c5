"""`kalkan-server` and the JSON API speak Kyrgyz, Russian and English (docs/server.md "Languages").

The CLI runs as a real process (the language comes from --lang or the locale variables, as
a school's IT person would run it); the API runs in-process on a real database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from policy_server import cli
from policy_server.errors import ERROR_TEXTS, KalkanError
from policy_server.web import i18n

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


def run_cli(*args: str, lang_env: dict[str, str] | None = None,
            stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")}
    env.update(lang_env or {})
    return subprocess.run([sys.executable, "-m", "policy_server.cli", *args], input=stdin, env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------------------- the CLI, real processes


def test_cli_in_russian_from_lang_for_a_command_and_its_error(tmp_path):
    state = str(tmp_path / "state")
    russian = {"LANG": "ru_RU.UTF-8"}
    made = run_cli("create-user", "--state-dir", state, "--role", "admin", "--username", "aigul",
                   "--password-stdin", lang_env=russian, stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "создан(а) admin 'aigul'"

    again = run_cli("create-user", "--state-dir", state, "--role", "admin", "--username", "aigul",
                    "--password-stdin", lang_env=russian, stdin=PASSWORD + "\n")
    assert again.returncode == 2
    assert again.stderr.strip() == ("kalkan-server: Пользователь с именем «aigul» уже существует. "
                                    "Выберите другое имя.")

    weak = run_cli("create-user", "--state-dir", state, "--role", "teacher", "--username", "bakyt",
                   "--password-stdin", lang_env=russian, stdin="short\n")
    assert weak.returncode == 2 and "Пароль слишком короткий" in weak.stderr and "8" in weak.stderr


def test_cli_in_kyrgyz_from_the_option_for_a_command_and_its_error(tmp_path):
    state = str(tmp_path / "state")
    # --lang wins over the locale
    dry = run_cli("--lang", "ky", "retention", "--state-dir", state, lang_env={"LANG": "ru_RU.UTF-8"})
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("90 күндөн эски интернетти колдонуу жазуулары")
    assert "  web.usage: 0" in lines
    assert lines[-1] == "сынамык иштетүү: эч нерсе өчүрүлгөн жок. Өчүрүү үчүн --apply менен кайра иштетиңиз."

    late = run_cli("--lang", "ky", "enrollment-code", "--state-dir", state,
                   "--expires", "2020-01-01T08:00+06:00")
    assert late.returncode == 2
    assert late.stderr.strip() == ("kalkan-server: 2020-01-01T08:00+06:00 мөөнөтү өтүп кеткен. "
                                   "Кийинки убакытты тандаңыз.")
    missing = run_cli("--lang", "ky", "check-backup", str(tmp_path / "nothing-here"))
    assert missing.returncode == 2 and "файл эмес" in missing.stderr


def test_cli_machine_output_is_the_same_in_every_language(tmp_path):
    state = str(tmp_path / "state")
    code = run_cli("--lang", "ru", "enrollment-code", "--state-dir", state, "--uses", "3")
    assert code.returncode == 0, code.stderr
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}\n", code.stdout)  # bare: scripts read it
    assert "использований: 3" in code.stderr                                    # the person's line
    as_json = run_cli("--lang", "ky", "run-checks", "--state-dir", state, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout.strip().startswith('{"av.full_scan_overdue": 0')


def test_cli_stays_english_by_default_and_when_lc_all_says_c(tmp_path):
    state = str(tmp_path / "state")
    plain = run_cli("retention", "--state-dir", state)
    assert plain.stdout.splitlines()[-1] == "dry run: nothing removed. Run again with --apply to remove them."
    overridden = run_cli("enrollment-code", "--state-dir", state, "--expires", "soon",
                         lang_env={"LC_ALL": "C", "LANG": "ru_RU.UTF-8"})
    assert overridden.returncode == 2
    assert overridden.stderr.startswith("kalkan-server: expiry 'soon' is not understood")


@pytest.mark.parametrize(("explicit", "environ", "expected"), [
    ("ky", {"LANG": "ru_RU.UTF-8"}, "ky"),
    (None, {"LANG": "ru_RU.UTF-8"}, "ru"),
    (None, {"LC_MESSAGES": "ky_KG.UTF-8", "LANG": "ru_RU.UTF-8"}, "ky"),
    (None, {"LC_ALL": "C", "LANG": "ru_RU.UTF-8"}, "en"),  # the first set variable decides
    (None, {"LC_ALL": "", "LANG": "ky_KG@latin"}, "ky"),   # an empty one does not count
    (None, {"LANG": "de_DE.UTF-8"}, "en"),
    (None, {}, "en"),
])
def test_language_choice_follows_posix_order(explicit, environ, expected):
    assert cli.choose_language(explicit, environ) == expected


# ----------------------------------------------------------------------------- the API


def test_wrong_enrolment_code_has_a_code_and_speaks_the_asked_language(api):
    body = {"code": "AAAA-BBBB-CCCC", "hostname": "pc-01"}
    english = api.client.post("/api/v1/enroll", json=body)
    assert english.status_code == 403
    assert english.json()["code"] == "enroll.unknown_code"
    assert english.json()["detail"].startswith("this enrolment code is not known")  # unchanged for scripts

    russian = api.client.post("/api/v1/enroll", json=body, headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert russian.status_code == 403
    assert russian.json() == {"code": "enroll.unknown_code",
                              "detail": "Этот код регистрации неизвестен. Проверьте, нет ли опечатки, или "
                                        "попросите у ответственного лица новый код "
                                        "(kalkan-server enrollment-code)."}
    kyrgyz = api.client.post("/api/v1/enroll", json=body, headers={"Accept-Language": "de, ky;q=0.5"})
    assert kyrgyz.json()["detail"].startswith("Бул каттоо коду белгисиз")
    unknown = api.client.post("/api/v1/enroll", json=body, headers={"Accept-Language": "de-DE"})
    assert unknown.json()["detail"] == english.json()["detail"]  # none of ours: English


def test_used_up_and_expired_codes_and_a_revoked_token(api):
    code = api.code(uses=1)
    first = api.client.post("/api/v1/enroll", json={"code": code, "hostname": "pc-01"})
    assert first.status_code == 200, first.text
    used = api.client.post("/api/v1/enroll", json={"code": code, "hostname": "pc-02"},
                           headers={"Accept-Language": "ru"})
    assert used.status_code == 403
    assert used.json()["code"] == "enroll.code_used_up"
    assert used.json()["detail"].startswith("Этот код регистрации уже использован полностью")

    from policy_server.agents.service import create_enrollment_code
    from policy_server.db.models import EnrollmentCode

    with api.db() as db:
        stale = create_enrollment_code(db, actor="test", uses=5,
                                       expires_at=datetime.now(UTC) + timedelta(hours=1))
        db.commit()
        for row in db.query(EnrollmentCode).all():
            row.expires_at = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
        db.commit()
    expired = api.client.post("/api/v1/enroll", json={"code": stale, "hostname": "pc-03"},
                              headers={"Accept-Language": "ky"})
    assert expired.json()["code"] == "enroll.code_expired"
    assert expired.json()["detail"] == ("Бул каттоо кодунун мөөнөтү 2025-03-01 08:00 UTC бүткөн. "
                                        "Жооптуу адамдан жаңы код сураңыз.")

    from policy_server.agents.service import revoke_agent

    with api.db() as db:
        revoke_agent(db, agent_id=first.json()["agent_id"], actor="test")
        db.commit()
    bearer = {"Authorization": f"Bearer {first.json()['token']}"}
    refused = api.client.get("/api/v1/policy", headers={**bearer, "Accept-Language": "ru"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["code"] == "agent.token_unknown"
    assert refused.json()["detail"].startswith("Этот токен агента неизвестен или отозван")
    plain = api.client.post("/api/v1/events", json={"events": []}, headers=bearer)
    assert plain.status_code == 401 and plain.json()["detail"].startswith("this agent token is unknown")
    missing = api.client.get("/api/v1/policy")
    assert missing.status_code == 401 and missing.json()["code"] == "agent.token_missing"


def test_an_error_without_a_code_keeps_its_english_and_says_code_null(api):
    r = api.client.post("/api/v1/enroll", json={"hostname": "pc-01"}, headers={"Accept-Language": "ru"})
    assert r.status_code == 422 and r.json()["code"] == "request.invalid"
    assert KalkanError("plain words").in_language("ru") == "plain words"
    # params that do not fit the text: the English message, never a crash
    broken = KalkanError("no person with username 'x'", code="person.not_found", params={"wrong": 1})
    assert broken.in_language("ky") == "no person with username 'x'"


# ----------------------------------------------------------------------------- catalogs and codes


def _template_ids() -> set:
    with open(Path(i18n.LOCALE_DIR) / "messages.pot", "rb") as handle:
        return {m.id for m in read_po(handle) if m.id}


def test_cli_and_error_texts_are_extracted_into_the_catalogs():
    """The web console's extraction covers policy_server/web only: this keeps the CLI's and the
    errors' strings in messages.pot (the command in docs/server.md "Languages")."""
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = set()
    for module in ("policy_server/cli.py", "policy_server/errors.py"):
        found |= {message for _line, message, _comments, _context
                  in extract_from_file("python", str(REPO / module), keywords=keywords)}
    assert set(ERROR_TEXTS.values()) <= found
    missing = found - _template_ids()
    assert not missing, f"not in messages.pot: {missing}; run the extraction in docs/server.md"


def _sources_raising_codes() -> list[str]:
    """Every module and package of the server that raises an error with a code (new domains
    are covered without editing this test)."""
    found = set()
    for source in sorted((REPO / "policy_server").rglob("*.py")):
        if re.search(r'code="[a-z_]+\.[a-z_]+"', source.read_text()):
            found.add(str(source.relative_to(REPO)))
    return sorted(found)


def _import_every_server_module() -> None:
    """Domains register their error texts at import (errors.register_error_texts)."""
    import importlib
    import pkgutil

    import policy_server

    for module in pkgutil.walk_packages(policy_server.__path__, "policy_server."):
        if ".migrations." not in module.name:
            importlib.import_module(module.name)


@pytest.mark.parametrize("path", _sources_raising_codes())
def test_every_error_code_raised_has_a_translated_text(path):
    from policy_server.errors import all_error_texts

    _import_every_server_module()
    texts = all_error_texts()
    codes = set(re.findall(r'code="([a-z_]+\.[a-z_]+)"', (REPO / path).read_text()))
    assert codes <= set(texts), f"codes without a text (errors.ERROR_TEXTS or a domain's " \
                                f"register_error_texts): {codes - set(texts)}"
    for code in codes:
        for language in ("ky", "ru"):
            assert i18n.translations(language).gettext(texts[code]) != texts[code], (code, language)


def test_english_report_lines_are_the_services_own(tmp_path):
    """The CLI says backup and retention reports in the chosen language; its English must stay
    what db/backup.py and db/retention.py say (a change there shows up here)."""
    from policy_server.db.backup import BackupReport
    from policy_server.db.retention import RetentionPlan

    report = BackupReport(path=tmp_path / "b", kind="sqlite", size_bytes=12345, revision="0007",
                          row_counts={"events": 1200, "people": 3})
    plan = RetentionPlan(days=90, cutoff=datetime(2025, 3, 1, 8, 0, tzinfo=UTC),
                         removable={"web.usage": 1500}, kept_for_open_incidents=2, incidents_affected={1: 3})
    cli._language = "en"
    assert cli.backup_lines(report) == report.lines()
    assert cli.retention_lines(plan) == plan.lines()
    cli._language = "ru"
    try:
        assert cli.backup_lines(report)[0].endswith("12,345 байт")
        lines = cli.retention_lines(plan)  # (by their start, not their place: counts get added)
        for start in ("  решённые инциденты, теряющие", "  очередь сообщений: удалено копий",
                      "  итоги уроков, из которых убраны имена",
                      # the notices', lesson audit's and old policy versions' lines: the notices' catalog
                      "  уведомления классным руководителям", "  записи аудита действий на уроке",
                      "  старые версии политики, из которых убраны места",
                      # the resolved incidents' (incidents' catalog), the class list's audit (fleet's)
                      "  решённые инциденты, из которых убирается учётная запись ученика",
                      "  записи аудита о привязке учётных записей учеников к классу",
                      # the ended bans' line: the lessons' catalog
                      "  запреты и уроки, закончившиеся до границы срока"):
            assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    finally:
        cli._language = cli.DEFAULT_LANGUAGE
