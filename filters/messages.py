"""Texts a person reads about a verdict, in Kyrgyz, Russian and English.

`explain(verdict, lang)` gives one sentence for the block page, CLI or console.  The
message id is the verdict's `reason` (``"block.<rule>"`` / ``"allow.<rule>"``);
`{categories}` is filled with category names in the same language.
"""

from __future__ import annotations

from typing import Any

from .categories import names

MESSAGES: dict[str, dict[str, str]] = {
    "block.ban": {
        "en": "A teacher has stopped internet use at this seat until {until}.",
        "ru": "Учитель запретил работу в интернете на этом месте до {until}.",
        "ky": "Мугалим бул орундагы интернетти {until} чейин токтотту.",
    },
    "block.lesson.no_internet": {
        "en": "The lesson in this room is running without internet.",
        "ru": "Урок в этом кабинете проходит без интернета.",
        "ky": "Бул кабинеттеги сабак интернетсиз өтүүдө.",
    },
    "block.lesson.not_on_allow_list": {
        "en": "During this lesson only the sites the teacher chose are open.",
        "ru": "Во время этого урока открыты только сайты, выбранные учителем.",
        "ky": "Бул сабак учурунда мугалим тандаган сайттар гана ачык.",
    },
    "block.schedule.holiday": {
        "en": "Internet use is closed today (holiday).",
        "ru": "Сегодня интернет закрыт (выходной день).",
        "ky": "Бүгүн интернет жабык (майрам күнү).",
    },
    "block.schedule.outside_hours": {
        "en": "Internet use is closed at this hour by the school's schedule.",
        "ru": "В это время интернет закрыт по расписанию школы.",
        "ky": "Мектептин графиги боюнча бул убакта интернет жабык.",
    },
    "block.unsupervised.no_internet": {
        "en": "Students may use the internet only during a lesson with a teacher.",
        "ru": "Ученики могут пользоваться интернетом только на уроке с учителем.",
        "ky": "Окуучулар интернетти мугалим менен сабакта гана колдоно алышат.",
    },
    "block.unsupervised.not_on_allow_list": {
        "en": "Outside a lesson only the school's allowed sites are open.",
        "ru": "Вне урока открыты только разрешённые школой сайты.",
        "ky": "Сабактан тышкары мектеп уруксат берген сайттар гана ачык.",
    },
    "block.school.block_list": {
        "en": "The school has blocked this site.",
        "ru": "Школа заблокировала этот сайт.",
        "ky": "Мектеп бул сайтты бөгөттөдү.",
    },
    "block.group.block_list": {
        "en": "This site is blocked for your group.",
        "ru": "Этот сайт заблокирован для вашей группы.",
        "ky": "Бул сайт сиздин топ үчүн бөгөттөлгөн.",
    },
    "block.ip_literal": {
        "en": "Sites are opened by their name here, not by a bare address.",
        "ru": "Здесь сайты открываются по имени, а не по голому адресу.",
        "ky": "Бул жерде сайттар дарек менен эмес, аты менен ачылат.",
    },
    "block.category": {
        "en": "This site is in a category not allowed for your group: {categories}.",
        "ru": "Сайт относится к категории, запрещённой для вашей группы: {categories}.",
        "ky": "Бул сайт сиздин топко тыюу салынган категорияда: {categories}.",
    },
    "block.default.block": {
        "en": "Only allowed sites are open for your group.",
        "ru": "Для вашей группы открыты только разрешённые сайты.",
        "ky": "Сиздин топ үчүн уруксат берилген сайттар гана ачык.",
    },
    "block.download": {
        "en": "Downloading this kind of file needs permission: {kinds}.",
        "ru": "Для скачивания такого файла нужно разрешение: {kinds}.",
        "ky": "Мындай файлды жүктөө үчүн уруксат керек: {kinds}.",
    },
    "allowed": {
        "en": "Allowed.",
        "ru": "Разрешено.",
        "ky": "Уруксат берилди.",
    },
}


def explain(verdict_or_reason: Any, lang: str = "en", params: dict | None = None) -> str:
    """One sentence about a verdict (or a reason id with params) in `lang`."""
    if isinstance(verdict_or_reason, str):
        reason, values = verdict_or_reason, dict(params or {})
    else:
        reason, values = verdict_or_reason.reason, dict(verdict_or_reason.params)
    lang = lang if lang in ("ky", "ru", "en") else "en"
    texts = MESSAGES.get(reason) or MESSAGES["allowed"]
    if "categories" in values:
        values["categories"] = ", ".join(names(values["categories"], lang))
    if "kinds" in values and not isinstance(values["kinds"], str):
        values["kinds"] = ", ".join(values["kinds"])
    try:
        return texts[lang].format(**values)
    except (KeyError, IndexError):
        return texts[lang]
