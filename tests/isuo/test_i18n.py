"""The ISUO package's own catalog: every string its code and templates mark is translated to
Kyrgyz and Russian with the same placeholders, and the .mo files are compiled from the .po."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from policy_server.web import i18n

PACKAGE = Path(__file__).resolve().parents[2] / "policy_server" / "isuo"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def marked() -> set[str]:
    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    options = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "N_": None}
    return {m for _f, _l, m, _c, _x in extract_from_dir(str(PACKAGE), method_map, options, keywords=keywords)}


def shared(language: str) -> dict[str, str]:
    with open(i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po", "rb") as handle:
        return {m.id: m.string for m in read_po(handle) if m.id and m.string}


@pytest.mark.parametrize("language", ["ky", "ru"])
def test_every_isuo_string_is_translated(language):
    with open(PACKAGE / "locale" / language / "LC_MESSAGES" / "messages.po", "rb") as handle:
        own = {m.id: m.string for m in read_po(handle) if m.id}
    known = {**shared(language), **{k: v for k, v in own.items() if v}}
    missing = {m for m in marked() if m not in known}
    assert not missing, f"{language}: not translated: {missing}"
    for message_id, text in own.items():
        assert text, f"{language}: empty translation of {message_id!r}"
        assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(message_id)), text


@pytest.mark.parametrize("language", ["ky", "ru", "en"])
def test_compiled_catalog_matches(language):
    folder = PACKAGE / "locale" / language / "LC_MESSAGES"
    with open(folder / "messages.mo", "rb") as handle:
        compiled = {m.id: m.string for m in read_mo(handle) if m.id}
    with open(folder / "messages.po", "rb") as handle:
        source = {m.id: m.string for m in read_po(handle) if m.id and m.string}
    assert compiled == source, "stale .mo: pybabel compile -d policy_server/isuo/locale -D messages"
