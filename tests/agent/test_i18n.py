"""agent.i18n: choosing the language and looking messages up; every agent catalogue is complete."""

from __future__ import annotations

import importlib

import pytest

from agent.i18n import (
    LANGUAGES,
    choose_language,
    language_from_accept,
    language_from_env,
    message,
    missing_translations,
    supported,
)

# Every ky/ru/en catalogue of the agent: (module, attribute).  A new one belongs here.
CATALOGUES = [
    ("agent.cli", "_TEXT"),
    ("agent.cli", "_ENROLL_TEXT"),
    ("agent.integrity.cli", "_TEXT"),
    ("agent.antivirus.cli", "TEXT"),
    ("agent.usb.cli", "TEXT"),
    ("agent.proxy.i18n", "MESSAGES"),
    ("agent.proxy.i18n", "RULES"),
]

SAMPLE = {
    "hello": {"ky": "Салам, {name}", "ru": "Привет, {name}", "en": "Hello, {name}"},
    "only_en": {"en": "English only", "ru": "", "ky": ""},
}


@pytest.mark.parametrize(("module", "attribute"), CATALOGUES)
def test_every_agent_catalogue_is_complete(module: str, attribute: str) -> None:
    catalogue = getattr(importlib.import_module(module), attribute)
    assert catalogue, f"{module}.{attribute} is empty"
    assert missing_translations(catalogue) == []


def test_missing_translations_names_each_gap() -> None:
    broken = {
        "a": {"ky": "бир", "en": "one"},
        "b": {"ky": "{n} файл", "ru": "файлов", "en": "{n} files"},
        "c": {"ky": "ок", "ru": "ок", "en": "ok", "de": "gut"},
    }
    problems = missing_translations(broken)
    assert "a: no ru text" in problems
    assert any(p.startswith("b: placeholders differ") for p in problems)
    assert "c: unknown language(s) ['de']" in problems
    assert missing_translations(SAMPLE) == ["only_en: no ky text", "only_en: no ru text"]


def test_message_formats_and_falls_back_to_english() -> None:
    assert message(SAMPLE, "hello", "ky", name="Айбек") == "Салам, Айбек"
    assert message(SAMPLE, "hello", "ru", name="Айбек") == "Привет, Айбек"
    assert message(SAMPLE, "only_en", "ky") == "English only"
    assert message(SAMPLE, "hello", "de", name="x") == "Hello, x"
    assert message({"brace": {"en": "{not a field"}}, "brace", "en") == "{not a field"  # no params: as is
    with pytest.raises(KeyError, match="no message 'nope'"):
        message(SAMPLE, "nope", "en")


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("ru_RU.UTF-8", "ru"), ("ky_KG", "ky"), ("ky-KG", "ky"), ("EN", "en"), ("en_US@euro", "en"),
     ("C", None), ("C.UTF-8", None), ("de_DE", None), ("", None), (None, None)],
)
def test_supported_reads_locale_and_language_tags(tag: str | None, expected: str | None) -> None:
    assert supported(tag) == expected


def test_environment_follows_posix_precedence() -> None:
    assert language_from_env({"LANG": "ru_RU.UTF-8"}) == "ru"
    assert language_from_env({"LANG": "ru_RU.UTF-8", "LC_MESSAGES": "ky_KG.UTF-8"}) == "ky"
    assert language_from_env({"LANG": "ru_RU.UTF-8", "LC_MESSAGES": "ky_KG", "LC_ALL": "en_US"}) == "en"
    # The first set variable decides, even if it is not one of ours: LC_ALL=C means the default.
    assert language_from_env({"LC_ALL": "C", "LANG": "ru_RU.UTF-8"}) == "en"
    assert language_from_env({"LC_ALL": "", "LANG": "ky_KG"}) == "ky"  # empty does not count
    assert language_from_env({}) == "en"
    assert language_from_env({}, default="ky") == "ky"


def test_explicit_choice_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_language("ky", {"LANG": "ru_RU"}) == "ky"
    assert choose_language(None, {"LANG": "ru_RU"}) == "ru"
    assert choose_language("de", {"LANG": "ru_RU"}) == "ru"  # not ours: ignored
    monkeypatch.setenv("LC_ALL", "ru_RU.UTF-8")
    assert choose_language() == "ru"  # no mapping given: the process environment


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        ("ru-RU,ru;q=0.9,en;q=0.8", "ky", "ru"),
        ("de, en;q=0.5, ru;q=0.7", "ky", "ru"),
        ("en;q=0.2, ky", "ru", "ky"),
        ("de-DE", "ru", "ru"),
        ("ru;q=0, en;q=0.1", "ky", "en"),
        ("ru;q=bad, en;q=0.1", "ky", "en"),
        ("", "en", "en"),
        (None, "xx", "ky"),  # an unsupported default becomes the school's language
    ],
)
def test_accept_language_by_quality(header: str | None, default: str, expected: str) -> None:
    assert language_from_accept(header, default) == expected


def test_languages_are_the_three_of_the_school() -> None:
    assert LANGUAGES == ("ky", "ru", "en")


def test_proxy_lookups_keep_their_fallback_to_the_id() -> None:
    from agent.proxy.i18n import rule_text, t

    assert t("blocked_title", "ru") == "Эта страница заблокирована"
    assert t("ban", "en") == "The teacher stopped your internet for now"  # rule ids work through t too
    assert t("no.such.id", "ky") == "no.such.id"
    assert rule_text("", "ky") == "Демейки эреже"
    assert rule_text("custom.rule", "ru") == "custom.rule"
