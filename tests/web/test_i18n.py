"""The translation layer and the catalogs: pure checks, no server."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from policy_server.web import i18n

REPO_ROOT = Path(__file__).resolve().parents[2]

LOCALE = Path(i18n.LOCALE_DIR)
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ru-RU,ru;q=0.9,en;q=0.8", ["ru", "en"]),
        ("en;q=0.3, ky;q=0.9", ["ky", "en"]),
        ("de-DE,fr;q=0.9", []),
        ("ru;q=0, en", ["en"]),
        ("ru;q=abc, ky", ["ky"]),
        ("", []),
        (None, []),
    ],
)
def test_accept_language_is_parsed_by_quality(header, expected):
    assert i18n.parse_accept_language(header) == expected


def test_language_choice_order_query_cookie_person_browser_default():
    assert i18n.negotiate_language(query="en", cookie="ru", person="ky", accept_language="ru") == "en"
    assert i18n.negotiate_language(query="xx", cookie="ru", person="ky", accept_language="en") == "ru"
    assert i18n.negotiate_language(cookie=None, person="en", accept_language="ru") == "en"
    assert i18n.negotiate_language(accept_language="de, ru-KG;q=0.5") == "ru"
    assert i18n.negotiate_language(accept_language="de") == "ky"  # the school default
    assert i18n.negotiate_language(default="ru") == "ru"


def test_translate_fills_placeholders_in_each_language():
    assert i18n.translate("ru", "Not seen for %(num)d min", num=12) == "Нет связи 12 мин."
    assert i18n.translate("ky", "Not seen for %(num)d min", num=12) == "12 мүнөттөн бери кабар жок"
    assert i18n.translate("en", "Not seen for %(num)d min", num=12) == "Not seen for 12 min"


def test_russian_plurals_use_three_forms():
    forms = [i18n.translate_plural("ru", "%(num)s event", "%(num)s events", n) for n in (1, 3, 5, 21)]
    assert forms == ["1 событие", "3 события", "5 событий", "21 событие"]


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="use one of ky, ru, en"):
        i18n.translations("de")


def test_pick_for_dict_style_texts():
    texts = {"ky": "Салам", "ru": "Привет", "en": "Hello"}
    assert i18n.pick("ru", texts) == "Привет"
    assert i18n.pick("de", texts) == "Салам"


def test_dates_in_school_time_and_language():
    moment = datetime(2025, 3, 1, 6, 30, tzinfo=UTC)  # 12:30 in Bishkek (UTC+6)
    assert "12:30" in i18n.format_datetime(moment, "ru")
    assert "мар" in i18n.format_datetime(moment, "ru")
    assert "12:30" in i18n.format_datetime(moment, "ky")
    assert "PM" in i18n.format_datetime(moment, "en")
    assert i18n.format_datetime(None, "en") == "—"


# ----------------------------------------------------------------------------- catalogs


def _catalog(language: str):
    with open(LOCALE / language / "LC_MESSAGES" / "messages.po", "rb") as handle:
        return read_po(handle, locale=language)


def _template_ids() -> set:
    with open(LOCALE / "messages.pot", "rb") as handle:
        return {m.id for m in read_po(handle) if m.id}


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_every_message_is_translated_with_the_same_placeholders(language):
    catalog = _catalog(language)
    wanted = _template_ids()
    present = {m.id: m for m in catalog if m.id}
    missing = wanted - set(present)
    assert not missing, f"{language}: not in the catalog: {missing}; run pybabel update"
    for message_id in wanted:
        message = present[message_id]
        assert "fuzzy" not in message.flags, f"{language}: fuzzy translation of {message_id!r}"
        ids = message_id if isinstance(message_id, tuple) else (message_id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), f"{language}: untranslated {message_id!r}"
        expected = set(PLACEHOLDER.findall(ids[-1]))
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == expected, f"{language}: placeholders differ in {text!r}"


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_compiled_catalog_matches_the_po_file(language):
    """The committed .mo must be compiled from the committed .po (pybabel compile)."""
    def plain(value):  # read_mo gives plural ids as lists, read_po as tuples
        return tuple(value) if isinstance(value, list | tuple) else value

    with open(LOCALE / language / "LC_MESSAGES" / "messages.mo", "rb") as handle:
        compiled = {plain(m.id): plain(m.string) for m in read_mo(handle) if m.id}
    source = {plain(m.id): plain(m.string) for m in _catalog(language) if m.id and m.string}
    assert compiled == source, "the .mo is stale: run pybabel compile -d policy_server/web/locale -D messages"


def test_the_template_lists_every_string_the_code_marks():
    """messages.pot is up to date with the templates and the code (pybabel extract)."""
    from babel.messages.extract import extract_from_dir

    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    options = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = {
        message if isinstance(message, str) else tuple(message)
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(LOCALE.parent), method_map, options, keywords=keywords)
    }
    missing = found - _template_ids()
    assert not missing, f"strings missing from messages.pot: {missing}; run the extraction in docs/web.md"


# ----------------------------------------------------------------------------- domain catalogs


def _domain_catalog_files() -> list[Path]:
    return [d / lang / "LC_MESSAGES" / "messages.po"
            for d in i18n.domain_locale_dirs() for lang in ("ky", "ru")]


@pytest.mark.parametrize("po_path", _domain_catalog_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_each_domain_catalog_is_translated_and_compiled(po_path):
    """A domain's own catalog (policy_server/<domain>/locale) is complete, not fuzzy, and its
    compiled .mo says the same (a stale or fuzzy-skipped .mo would show English on a page)."""
    import gettext

    with open(po_path, "rb") as handle:
        catalog = read_po(handle)
    assert not catalog.fuzzy, f"{po_path} is marked fuzzy: pybabel compile skips it"
    with open(po_path.with_suffix(".mo"), "rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), f"{po_path}: no translation of {message.id!r}"
        assert "fuzzy" not in message.flags, f"{po_path}: fuzzy translation of {message.id!r}"
        if isinstance(message.id, str):
            assert compiled.gettext(message.id) == message.string, \
                f"{po_path.with_suffix('.mo')} is stale for {message.id!r}: run pybabel compile"


# ----------------------------------------------------------------------------- one word per message


def _every_catalog(language: str) -> list[tuple[str, Path]]:
    """The shared catalog and every domain's, in the order `i18n.translations` merges them."""
    found = [("web", LOCALE / language / "LC_MESSAGES" / "messages.po")]
    found += [(d.parent.name, d / language / "LC_MESSAGES" / "messages.po")
              for d in i18n.domain_locale_dirs()]
    return [(name, path) for name, path in found if path.exists()]


def _as_shown(message, language: str):
    """What a page shows for `message`: in English an empty msgstr means the msgid itself."""
    if isinstance(message.id, tuple | list):
        strings = tuple(message.string)
        if language == "en":
            strings = tuple(s or message.id[min(i, 1)] for i, s in enumerate(strings))
        return strings if any(strings) else None
    if language == "en":
        return message.string or message.id
    return message.string or None  # untranslated: checked by the tests above, not a clash


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_a_message_has_one_translation_in_every_catalog(language):
    """The catalogs are merged into one per language, a later domain's entry silently replacing
    an earlier one: a msgid translated two ways shows another domain's word on some page."""
    texts: dict[object, dict[str, object]] = {}
    for name, path in _every_catalog(language):
        with open(path, "rb") as handle:
            catalog = read_po(handle, locale=language)
        for message in catalog:
            if not message.id:
                continue
            shown = _as_shown(message, language)
            if shown is not None:
                key = (message.context, tuple(message.id) if isinstance(message.id, list) else message.id)
                texts.setdefault(key, {})[name] = shown
    clashes = [
        f"  {msgid!r}" + (f" (context {context!r})" if context else "") + ": "
        + "; ".join(f"{name}: {text!r}" for name, text in by_catalog.items())
        for (context, msgid), by_catalog in texts.items() if len(set(by_catalog.values())) > 1
    ]
    assert not clashes, (
        f"{language}: {len(clashes)} msgid(s) translated differently in different catalogs "
        "(policy_server/web/locale and policy_server/<domain>/locale are merged into one, so only one "
        "of these shows, on every page):\n" + "\n".join(clashes) + "\n"
        "Fix: where the meaning is the same, use one translation in every catalog; where it differs "
        "(a person's name vs a scene's name…), give the code a distinct English msgid (e.g. 'Scene name') "
        "and translate it in ky, ru and en; then run pybabel compile -d <that locale folder> -D messages."
    )
