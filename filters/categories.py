"""Kalkan's content categories: ids, names in Kyrgyz/Russian/English, the regulation
clauses each serves, default actions, and how the UT1 lists map onto them.

The category *ids* are the stable contract: policies (`category_actions`), compiled
indexes and events all name categories by id.  The bit a category takes inside a
compiled index is recorded in that index's own header, so this list may grow
without invalidating old index files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Action = Literal["allow", "block"]
LANGUAGES = ("ky", "ru", "en")

# 000 §8.1 / 001 §3.3: content harmful to minors, forbidden for students.
HARMFUL = ("000 §8.1", "001 §3.3")
# 001 §3.1 and 000 §8.1: no paid services, no transactions over the internet.
TRANSACTIONS = ("000 §8.1", "001 §3.1")
# 000 §7.3 / 001 §2.6: non-educational resources, decided per group by the council.
NON_EDUCATIONAL = ("000 §7.3", "001 §2.6")
# 000 §5.5–5.6: block unauthorised access, keep the security tools from being bypassed.
SECURITY = ("000 §5.5", "000 §5.6")
BYPASS = ("000 §5.6", "001 §2.11")
UNPERMITTED_DOWNLOADS = ("000 §8.1",)


@dataclass(frozen=True)
class Category:
    id: str
    names: dict[str, str]
    clauses: tuple[str, ...]
    student: Action  # default action for student-kind groups
    staff: Action  # default action for teacher, staff and admin groups
    passthrough: bool = False  # carries personal data (banks): never intercepted
    description: str = ""

    def name(self, lang: str = "en") -> str:
        return self.names.get(lang) or self.names["en"]

    def default_for(self, group_kind: str) -> Action:
        return self.student if group_kind == "student" else self.staff


def _c(id_: str, en: str, ru: str, ky: str, clauses: tuple[str, ...], student: Action, staff: Action,
       **kw) -> Category:
    return Category(id_, {"en": en, "ru": ru, "ky": ky}, clauses, student, staff, **kw)


_ALL = [
    _c("porn", "Pornography", "Порнография", "Порнография", HARMFUL, "block", "block"),
    _c("adult", "Adult content", "Контент для взрослых", "Чоңдорго арналган мазмун", HARMFUL,
       "block", "allow"),
    _c("violence", "Violence and cruelty", "Насилие и жестокость", "Зордук-зомбулук жана ырайымсыздык",
       HARMFUL, "block", "allow"),
    _c("hate", "Ethnic and racial hatred", "Национальная и расовая ненависть",
       "Улуттук жана расалык араздашуу", HARMFUL, "block", "block"),
    _c("extremism", "Terrorism and extremism", "Терроризм и экстремизм", "Терроризм жана экстремизм",
       HARMFUL, "block", "block"),
    _c("sects", "Sects and cults", "Секты", "Секталар", HARMFUL, "block", "allow"),
    _c("drugs", "Drugs", "Наркотики", "Баңгизаттар", HARMFUL, "block", "allow"),
    _c("alcohol_tobacco", "Alcohol and tobacco", "Алкоголь и табак", "Алкоголь жана тамеки", HARMFUL,
       "block", "allow"),
    _c("self_harm", "Self-harm and suicide", "Самоповреждение и суицид",
       "Өзүнө зыян келтирүү жана өз жанын кыюу", HARMFUL, "block", "allow"),
    _c("dangerous", "Danger to life and health", "Опасность для жизни и здоровья",
       "Өмүргө жана ден соолукка коркунуч", HARMFUL, "block", "allow"),
    _c("gambling", "Gambling", "Азартные игры", "Кумар оюндары", HARMFUL + ("001 §3.1",), "block", "block"),
    _c("transactions", "Payments and banking", "Платежи и банки", "Төлөмдөр жана банктар", TRANSACTIONS,
       "block", "allow", passthrough=True),
    _c("crypto", "Cryptocurrency", "Криптовалюта", "Криптовалюта", TRANSACTIONS, "block", "allow"),
    _c("shopping", "Online shopping", "Интернет-магазины", "Онлайн дүкөндөр", TRANSACTIONS, "block", "allow"),
    _c("proxies", "Proxies, VPN and DNS bypass", "Прокси, VPN и обход DNS",
       "Прокси, VPN жана DNS айланып өтүү", BYPASS, "block", "block"),
    _c("malware", "Malware", "Вредоносные программы", "Зыяндуу программалар", SECURITY, "block", "block"),
    _c("phishing", "Phishing", "Фишинг", "Фишинг", SECURITY, "block", "block"),
    _c("hacking", "Hacking", "Взлом", "Бузуп кирүү", SECURITY, "block", "allow"),
    _c("remote_access", "Remote control", "Удалённое управление", "Алыстан башкаруу", BYPASS,
       "block", "allow"),
    _c("social", "Social networks and chat", "Социальные сети и чаты", "Социалдык тармактар жана чаттар",
       NON_EDUCATIONAL, "block", "allow"),
    _c("games", "Games", "Игры", "Оюндар", NON_EDUCATIONAL, "block", "allow"),
    _c("dating", "Dating", "Знакомства", "Таанышуу сайттары", HARMFUL, "block", "block"),
    _c("warez", "Pirated software", "Пиратские программы", "Каракчылык программалар",
       UNPERMITTED_DOWNLOADS, "block", "block"),
    _c("downloads", "File downloads and file hosting", "Файлообменники", "Файл алмашуу сайттары",
       UNPERMITTED_DOWNLOADS, "block", "allow"),
    _c("cheating", "Exam cheating", "Списывание на экзаменах", "Сынакта көчүрүү", NON_EDUCATIONAL,
       "block", "allow"),
    _c("fakenews", "Fake news", "Фейковые новости", "Жалган жаңылыктар", NON_EDUCATIONAL, "block", "allow"),
    _c("audio_video", "Audio and video", "Аудио и видео", "Аудио жана видео", NON_EDUCATIONAL,
       "allow", "allow"),
    _c("entertainment", "Entertainment", "Развлечения", "Көңүл ачуу", NON_EDUCATIONAL, "allow", "allow"),
    _c("ads", "Advertising", "Реклама", "Жарнама", NON_EDUCATIONAL, "allow", "allow"),
    _c("shortener", "Link shorteners", "Сокращатели ссылок", "Шилтеме кыскарткычтар", NON_EDUCATIONAL,
       "allow", "allow"),
    _c("webmail", "Web mail", "Веб-почта", "Веб-почта", NON_EDUCATIONAL, "allow", "allow"),
    _c("news", "News", "Новости", "Жаңылыктар", NON_EDUCATIONAL, "allow", "allow"),
    _c("education", "Education", "Образование", "Билим берүү", NON_EDUCATIONAL, "allow", "allow"),
]

CATEGORIES: dict[str, Category] = {c.id: c for c in _ALL}

# UT1 folder name → Kalkan category ids.  A UT1 category not listed here is not
# imported (the compiler reports it as skipped); add it here to use it.
UT1_MAP: dict[str, tuple[str, ...]] = {
    "adult": ("porn",),
    "porn": ("porn",),
    "mixed_adult": ("adult",),
    "lingerie": ("adult",),
    "agressif": ("hate", "violence"),
    "aggressive": ("hate", "violence"),
    "violence": ("hate", "violence"),
    "dangerous_material": ("dangerous",),
    "sect": ("sects",),
    "drogue": ("drugs",),
    "drugs": ("drugs",),
    "gambling": ("gambling",),
    "arjel": ("gambling",),
    "bank": ("transactions",),
    "financial": ("transactions",),
    "bitcoin": ("crypto",),
    "cryptojacking": ("malware",),
    "shopping": ("shopping",),
    "redirector": ("proxies",),
    "proxy": ("proxies",),
    "strict_redirector": ("proxies",),
    "strong_redirector": ("proxies",),
    "vpn": ("proxies",),
    "doh": ("proxies",),
    "residential-proxies": ("proxies",),
    "malware": ("malware",),
    "ddos": ("malware",),
    "dialer": ("malware",),
    "stalkerware": ("malware",),
    "phishing": ("phishing",),
    "hacking": ("hacking",),
    "remote-control": ("remote_access",),
    "social_networks": ("social",),
    "chat": ("social",),
    "forums": ("social",),
    "mail": ("social",),  # UT1's "mail" is an alias of "forums"
    "games": ("games",),
    "dating": ("dating",),
    "warez": ("warez",),
    "download": ("downloads",),
    "filehosting": ("downloads",),
    "tricheur": ("cheating",),
    "tricheur_pix": ("cheating",),
    "examen_pix": ("cheating",),
    "fakenews": ("fakenews",),
    "audio-video": ("audio_video",),
    "radio": ("audio_video",),
    "celebrity": ("entertainment",),
    "manga": ("entertainment",),
    "astrology": ("entertainment",),
    "sports": ("entertainment",),
    "publicite": ("ads",),
    "ads": ("ads",),
    "marketingware": ("ads",),
    "shortener": ("shortener",),
    "webmail": ("webmail",),
    "press": ("news",),
    "liste_blanche": ("education",),
    "liste_bu": ("education",),
    "educational_games": ("education",),
    "sexual_education": ("education",),
    "child": ("education",),
    "translation": ("education",),
}


class UnknownCategory(ValueError):
    pass


def get(category_id: str) -> Category:
    try:
        return CATEGORIES[category_id]
    except KeyError:
        raise UnknownCategory(
            f"unknown category {category_id!r}; known categories: {', '.join(sorted(CATEGORIES))}"
        ) from None


def check_ids(ids) -> list[str]:
    """The ids, each checked; raises UnknownCategory naming the bad one."""
    return [get(i).id for i in ids]


def names(ids, lang: str = "en") -> list[str]:
    """Display names of category ids in `lang` (unknown ids are shown as they are)."""
    return [CATEGORIES[i].name(lang) if i in CATEGORIES else i for i in ids]


def clauses_of(ids) -> tuple[str, ...]:
    """The regulation clauses the categories serve, in order, without repeats."""
    out: dict[str, None] = {}
    for i in ids:
        for clause in CATEGORIES[i].clauses if i in CATEGORIES else ():
            out[clause] = None
    return tuple(out)


@dataclass
class CategoryTable:
    """The category ids of one compiled index, in bit order (bit i = ids[i])."""

    ids: list[str] = field(default_factory=lambda: list(CATEGORIES))

    def bit(self, category_id: str) -> int:
        return 1 << self.ids.index(category_id)

    def mask_of(self, ids) -> int:
        mask = 0
        for i in ids:
            mask |= self.bit(i)
        return mask

    def ids_of(self, mask: int) -> frozenset[str]:
        out = []
        i = 0
        while mask:
            if mask & 1:
                out.append(self.ids[i])
            mask >>= 1
            i += 1
        return frozenset(out)
