"""The agent's one way to speak Kyrgyz, Russian and English.

Every command and page of the agent keeps its own catalogue of messages where it
is used (data, not code): a dict `{message_id: {"ky": ..., "ru": ..., "en": ...}}`.
This module only picks the language and looks a message up:

    lang = choose_language(args.lang)                  # --lang, else LC_ALL/LC_MESSAGES/LANG, else en
    lang = language_from_accept(header, default="ky")  # the proxy's pages: the browser's wish
    print(message(CATALOGUE, "changes", lang, n=3))    # "{n}" filled in; missing ky/ru -> English

It is pure: the environment is read only when no mapping is passed in, nothing
else is touched.  `missing_translations` lets a test prove a catalogue complete.
(The web console is separate: it uses Babel catalogues, see policy_server/web/i18n.py.)
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping

LANGUAGES: tuple[str, ...] = ("ky", "ru", "en")
FALLBACK = "en"  # what a person sees when a translation is missing, and on a command line by default

Catalogue = Mapping[str, Mapping[str, str]]

# POSIX order: LC_ALL overrides LC_MESSAGES, which overrides LANG; an empty value does not count.
_ENV_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


def supported(tag: str | None) -> str | None:
    """ky/ru/en for a locale or language tag ("ru_RU.UTF-8", "ky-KG", "EN"), else None ("C", "de")."""
    if not tag:
        return None
    primary = tag.strip().lower().replace("-", "_").split("_")[0].split(".")[0].split("@")[0]
    return primary if primary in LANGUAGES else None


def language_from_env(environ: Mapping[str, str] | None = None, default: str = FALLBACK) -> str:
    """The language of the first set locale variable (LC_ALL, LC_MESSAGES, LANG), else `default`.

    Only the first set variable counts: LC_ALL=C with LANG=ru_RU means English, as for
    every other program on the machine.
    """
    env = os.environ if environ is None else environ
    for name in _ENV_VARIABLES:
        value = env.get(name)
        if value:
            return supported(value) or default
    return default


def choose_language(explicit: str | None = None, environ: Mapping[str, str] | None = None,
                    default: str = FALLBACK) -> str:
    """An explicit choice (e.g. `--lang ru`) if it is one of ours, else the environment's, else `default`."""
    return supported(explicit) or language_from_env(environ, default)


def language_from_accept(accept_language: str | None, default: str = "ky") -> str:
    """The first of ky/ru/en the browser asks for in Accept-Language (by q-value), else `default`.

    An unsupported `default` becomes "ky", the school's language.
    """
    if default not in LANGUAGES:
        default = "ky"
    if not accept_language:
        return default
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        piece = part.strip()
        if not piece:
            continue
        tag, _, params = piece.partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else default


def message(catalogue: Catalogue, message_id: str, lang: str, **params: object) -> str:
    """Message `message_id` of `catalogue` in `lang`, with `{name}` placeholders filled from `params`.

    A missing (or empty) translation falls back to English.  An unknown id is a
    programming error and raises KeyError naming it.
    """
    try:
        entry = catalogue[message_id]
    except KeyError:
        raise KeyError(f"no message {message_id!r} in this catalogue: add it with ky, ru, en") from None
    text = entry.get(lang) or entry[FALLBACK]
    return text.format(**params) if params else text


def _placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def missing_translations(catalogue: Catalogue) -> list[str]:
    """Problems that make a catalogue incomplete, one readable line each (empty: complete).

    A message lacks a language or has an empty text, or its languages disagree on the
    `{name}` placeholders (a translation that drops `{n}` would hide the number).
    """
    problems: list[str] = []
    for message_id, entry in catalogue.items():
        for lang in LANGUAGES:
            if not (entry.get(lang) or "").strip():
                problems.append(f"{message_id}: no {lang} text")
        names = {lang: _placeholders(entry[lang]) for lang in LANGUAGES if entry.get(lang)}
        if len({frozenset(found) for found in names.values()}) > 1:
            problems.append(f"{message_id}: placeholders differ between languages {names}")
        extra = set(entry) - set(LANGUAGES)
        if extra:
            problems.append(f"{message_id}: unknown language(s) {sorted(extra)}")
    return problems
