"""The proxy's own pages: the block page and the report page (000 §8.3).

Pure functions from plain data to HTML (jinja2, autoescaped), in the language
picked by `i18n.pick_language`.  The addon serves them; nothing here touches
the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2

from agent.proxy.hosts import REPORT_HOST
from agent.proxy.i18n import rule_text, t

REPORT_URL = f"http://{REPORT_HOST}/"
# Reserved path on any intercepted host: the block page's unblock button posts here, same origin,
# so an HTTPS block page never submits a form to plain HTTP.
UNBLOCK_PATH = "/__kalkan__/unblock"
REPORT_SEND_PATH = "/send"
REPORT_HAND_PATH = "/hand"  # during a lesson: the student raises a hand (to the lesson's teacher)

CategoryNamer = Callable[[str, str], str]
TEMPLATES = Path(__file__).resolve().parent / "templates"
STYLE = (TEMPLATES / "style.css").read_text()


@dataclass(frozen=True)
class BlockInfo:
    """What the block page tells: what, why, when."""

    url: str
    host: str
    categories: tuple[str, ...] = ()
    rule: str = ""
    clauses: tuple[str, ...] = ()
    when: datetime | None = None
    download: bool = False
    detail: str = ""


@dataclass(frozen=True)
class RecentPage:
    url: str
    title: str = ""
    seen_at: datetime | None = None


@dataclass
class PageSet:
    """Renders the pages; `category_name(id, lang)` comes from filters.categories."""

    category_name: CategoryNamer = field(default=lambda category, lang: category)

    def __post_init__(self) -> None:
        self._env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                       undefined=jinja2.StrictUndefined)
        self._env.globals["t"] = t
        self._env.globals["rule_text"] = rule_text

    def block_page(self, info: BlockInfo, lang: str, *, unblock_sent: bool = False) -> str:
        names = [self.category_name(c, lang) for c in info.categories]
        when = (info.when or datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M")
        return self._env.get_template("block.html").render(
            lang=lang, info=info, names=names, when=when, unblock_path=UNBLOCK_PATH,
            report_url=REPORT_URL, unblock_sent=unblock_sent, style=STYLE,
        )

    def report_page(self, recent: Sequence[RecentPage], lang: str, *, error: str = "",
                    statuses: Sequence[dict] = (), lesson: bool = False, hand_raised: bool = False) -> str:
        """`statuses`: what became of this seat's reports (agent/artifacts.py), newest first;
        `lesson`: a lesson runs in this room, so the student may raise a hand."""
        shown = [s for s in statuses if isinstance(s, dict) and s.get("status") in
                 ("received", "blocked", "allowed", "rejected")][:10]
        return self._env.get_template("report.html").render(
            lang=lang, recent=list(recent), send_path=REPORT_SEND_PATH, error=error, style=STYLE,
            statuses=shown, lesson=lesson, hand_path=REPORT_HAND_PATH, hand_raised=hand_raised,
        )

    def report_thanks(self, url: str, lang: str) -> str:
        return self._env.get_template("thanks.html").render(lang=lang, url=url, style=STYLE,
                                                            report_url=REPORT_URL)
