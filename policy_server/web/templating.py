"""Jinja2 templates, one environment per language.

One environment per language (three, cached) keeps translation thread-safe: a
template never asks "which language is this request?", its environment already
knows.  Templates use `{% trans %}…{% endtrans %}` and `_("…")` (jinja2.ext.i18n);
`pybabel extract -F policy_server/web/babel.cfg` finds both.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from policy_server.web import i18n

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
SERVER_DIR = Path(__file__).resolve().parent.parent


def template_dirs() -> list[str]:
    """The shared layout's folder first, then each domain package's own `templates` folder.

    A domain names its templates under its own sub-folder (`fleet/seat.html`) so that two
    domains never shadow each other's files."""
    domain_dirs = sorted(p for p in SERVER_DIR.glob("*/templates") if p.is_dir() and p != TEMPLATES_DIR)
    return [str(TEMPLATES_DIR), *(str(p) for p in domain_dirs)]


@lru_cache(maxsize=len(i18n.LANGUAGES))
def environment(language: str) -> Environment:
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(d) for d in template_dirs()]),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a typo in a template fails the test, not the reader
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(
        lang=language,
        languages=i18n.LANGUAGES,
        language_names=i18n.LANGUAGE_NAMES,
    )

    def when(value: datetime | None) -> str:
        return i18n.format_datetime(value, language)

    env.filters["when"] = when
    return env


def render(language: str, template: str, **context: Any) -> str:
    return environment(language).get_template(template).render(**context)
