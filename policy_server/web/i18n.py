"""Kyrgyz, Russian and English for everything a person reads on the server.

The catalogs are gettext `.po`/`.mo` files under `policy_server/web/locale`
(Babel); the message ids are the English text.  How a page picks its language,
in order (003 §9: interfaces localised):

1. `?lang=ky|ru|en` in the URL (the language switcher's links),
2. the `lang` cookie (set when someone used the switcher),
3. the person's own language (their account), if logged in,
4. the browser's `Accept-Language`,
5. the school's default: Kyrgyz.

Other parts of the server use this module for their translated strings::

    from policy_server.web.i18n import translate, N_
    translate("ru", "Incidents")            # -> "Инциденты"
    translate("ky", "Not seen for %(minutes)d min", minutes=12)

`N_("…")` marks a string for extraction without translating it (for module-level
constants translated later, per request).
"""

from __future__ import annotations

import gettext as _gettext
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Final

from babel.dates import format_datetime as _babel_format_datetime
from babel.support import Translations

LANGUAGES: Final = ("ky", "ru", "en")
DEFAULT_LANGUAGE: Final = "ky"
LANGUAGE_COOKIE: Final = "lang"
# How each language names itself, for the switcher (never translated).
LANGUAGE_NAMES: Final = {"ky": "Кыргызча", "ru": "Русский", "en": "English"}
# School time (Kyrgyzstan has one time zone, UTC+6, no daylight saving).
DEFAULT_TIMEZONE: Final = "Asia/Bishkek"

LOCALE_DIR: Final = Path(__file__).resolve().parent / "locale"
DOMAIN: Final = "messages"
# Each domain package may keep its own catalog (`policy_server/<domain>/locale/<lang>/
# LC_MESSAGES/messages.po|mo`) beside its pages, so that domains are translated where they
# live; the shared catalog above and every domain's are merged into one per language.
SERVER_DIR: Final = Path(__file__).resolve().parent.parent


def domain_locale_dirs() -> list[Path]:
    """Every domain package's own `locale` folder (sorted, so the merge order is stable)."""
    return sorted(p for p in SERVER_DIR.glob("*/locale") if p.is_dir() and p != LOCALE_DIR)


def N_(message: str) -> str:  # noqa: N802 - the gettext convention
    """Mark a string for extraction; translate it later with `translate`."""
    return message


def normalise_language(value: str | None) -> str | None:
    """'ru-RU' → 'ru', 'KY' → 'ky'; None for anything that is not one of ours."""
    if not value:
        return None
    primary = value.strip().replace("_", "-").split("-")[0].lower()
    return primary if primary in LANGUAGES else None


def parse_accept_language(header: str | None) -> list[str]:
    """Our languages named in an Accept-Language header, best first.

    `"ru-RU,ru;q=0.9,en;q=0.8"` → `["ru", "en"]`.  Entries with a bad or zero q
    are skipped; unknown languages are ignored.
    """
    if not header:
        return []
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        language = normalise_language(tag)
        if language and quality > 0:
            weighted.append((-quality, position, language))
    seen: list[str] = []
    for _, _, language in sorted(weighted):
        if language not in seen:
            seen.append(language)
    return seen


def negotiate_language(
    *,
    query: str | None = None,
    cookie: str | None = None,
    person: str | None = None,
    accept_language: str | None = None,
    default: str = DEFAULT_LANGUAGE,
) -> str:
    """Pick the page language from what the request offers (see module docstring)."""
    for candidate in (query, cookie, person):
        language = normalise_language(candidate)
        if language:
            return language
    preferred = parse_accept_language(accept_language)
    if preferred:
        return preferred[0]
    return normalise_language(default) or DEFAULT_LANGUAGE


@lru_cache(maxsize=len(LANGUAGES))
def translations(language: str) -> _gettext.NullTranslations:
    """The compiled catalog of one language (English falls back to the message ids)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; use one of {', '.join(LANGUAGES)}")
    loaded = Translations.load(str(LOCALE_DIR), [language], DOMAIN)
    if language != "en" and not isinstance(loaded, Translations):
        # A missing Kyrgyz or Russian catalog would silently show English; say so instead.
        raise FileNotFoundError(
            f"no compiled catalog for {language!r} under {LOCALE_DIR}; "
            "run: pybabel compile -d policy_server/web/locale -D messages"
        )
    if isinstance(loaded, Translations):
        for extra_dir in domain_locale_dirs():
            extra = Translations.load(str(extra_dir), [language], DOMAIN)
            if isinstance(extra, Translations):
                loaded.merge(extra)
    return loaded


def translate(language: str, message: str, **params: object) -> str:
    """`message` in `language`, with `%(name)s` placeholders filled from `params`."""
    text = translations(language).gettext(message)
    return text % params if params else text


def translate_plural(language: str, singular: str, plural: str, n: int, **params: object) -> str:
    """Plural-aware translation; `n` is also available as `%(num)d`."""
    text = translations(language).ngettext(singular, plural, n)
    return text % {"num": n, **params}


def pick(language: str, texts: Mapping[str, str]) -> str:
    """For code that keeps its three languages in a small dict instead of the catalog."""
    for candidate in (language, DEFAULT_LANGUAGE, "en"):
        if candidate in texts:
            return texts[candidate]
    raise KeyError(f"no text for {language!r} among {sorted(texts)}")


def format_datetime(value: datetime | None, language: str, *, timezone: str = DEFAULT_TIMEZONE) -> str:
    """A date and time as a person in this school reads it (local time, their language)."""
    if value is None:
        return "—"
    return _babel_format_datetime(value, "medium", tzinfo=timezone, locale=language)
