"""The words a person reads on the proxy's pages, in Kyrgyz, Russian and English.

A small dict of the three languages (the pages are few); message ids are the
English keys.  `pick_language` follows the browser's Accept-Language, else the
school's default language (both through agent.i18n).
"""

from __future__ import annotations

from agent.i18n import LANGUAGES, language_from_accept, message

__all__ = ["LANGUAGES", "MESSAGES", "RULES", "pick_language", "rule_text", "t"]

MESSAGES: dict[str, dict[str, str]] = {
    "blocked_title": {
        "ky": "Бул барак бөгөттөлгөн",
        "ru": "Эта страница заблокирована",
        "en": "This page is blocked",
    },
    "blocked_lead": {
        "ky": "Мектептин интернет эрежелери боюнча бул баракка кирүүгө болбойт.",
        "ru": "По правилам пользования интернетом в школе эта страница недоступна.",
        "en": "Under the school's internet-use rules this page is not available.",
    },
    "what": {"ky": "Эмне", "ru": "Что", "en": "What"},
    "why": {"ky": "Эмне үчүн", "ru": "Почему", "en": "Why"},
    "category": {"ky": "Категория", "ru": "Категория", "en": "Category"},
    "rule": {"ky": "Эреже", "ru": "Правило", "en": "Rule"},
    "clause": {"ky": "Жобонун пункту", "ru": "Пункт положения", "en": "Regulation clause"},
    "when": {"ky": "Качан", "ru": "Когда", "en": "When"},
    "download": {"ky": "Файл жүктөө", "ru": "Загрузка файла", "en": "File download"},
    "ask_unblock": {
        "ky": "Ачууну суроо",
        "ru": "Попросить разблокировать",
        "en": "Ask to unblock",
    },
    "comment_optional": {
        "ky": "Эмне үчүн керек (милдеттүү эмес)",
        "ru": "Зачем нужно (необязательно)",
        "en": "Why you need it (optional)",
    },
    "unblock_sent": {
        "ky": "Сурамыңыз жооптуу адамга жөнөтүлдү.",
        "ru": "Ваш запрос отправлен ответственному лицу.",
        "en": "Your request was sent to the responsible person.",
    },
    "report_link": {
        "ky": "Жаман баракты билдирүү",
        "ru": "Сообщить о плохой странице",
        "en": "Report a bad page",
    },
    "report_title": {
        "ky": "Жаман баракты билдирүү",
        "ru": "Сообщить о плохой странице",
        "en": "Report a bad page",
    },
    "report_lead": {
        "ky": "Зыяндуу же уят баракты көрсөңүз, аны тандап же дарегин жазып, жооптуу адамга билдириңиз.",
        "ru": "Если вы увидели вредную или непристойную страницу, выберите её или введите адрес "
              "и сообщите ответственному лицу.",
        "en": "If you saw a harmful or indecent page, pick it or type its address and tell the "
              "responsible person.",
    },
    "recent_pages": {
        "ky": "Акыркы 15 мүнөттө ачылган барактар",
        "ru": "Страницы за последние 15 минут",
        "en": "Pages of the last 15 minutes",
    },
    "no_recent": {
        "ky": "Акыркы 15 мүнөттө барак жок.",
        "ru": "За последние 15 минут страниц нет.",
        "en": "No pages in the last 15 minutes.",
    },
    "or_type_url": {"ky": "же дарегин жазыңыз", "ru": "или введите адрес", "en": "or type the address"},
    "comment": {"ky": "Түшүндүрмө", "ru": "Комментарий", "en": "Comment"},
    "send": {"ky": "Жөнөтүү", "ru": "Отправить", "en": "Send"},
    "report_thanks": {
        "ky": "Рахмат! Билдирүүңүз жооптуу адамга жөнөтүлдү. Бул баракты жабыңыз.",
        "ru": "Спасибо! Ваше сообщение отправлено ответственному лицу. Закройте эту страницу.",
        "en": "Thank you! Your report was sent to the responsible person. Please leave that page.",
    },
    "report_missing_url": {
        "ky": "Баракты тандаңыз же дарегин жазыңыз.",
        "ru": "Выберите страницу или введите адрес.",
        "en": "Pick a page or type its address.",
    },
    "back": {"ky": "Артка", "ru": "Назад", "en": "Back"},
    "your_reports": {
        "ky": "Бул компьютерден жөнөтүлгөн билдирүүлөр",
        "ru": "Сообщения, отправленные с этого компьютера",
        "en": "Reports sent from this computer",
    },
    "status_received": {"ky": "алынды, каралууда", "ru": "получено, рассматривается",
                        "en": "received, being looked at"},
    "status_blocked": {"ky": "бөгөттөлдү", "ru": "заблокировано", "en": "blocked"},
    "status_allowed": {"ky": "уруксат берилди", "ru": "разрешено", "en": "allowed"},
    "status_rejected": {"ky": "четке кагылды", "ru": "отклонено", "en": "rejected"},
    "kind_report": {"ky": "билдирүү", "ru": "сообщение", "en": "report"},
    "kind_unblock": {"ky": "ачууну суроо", "ru": "просьба открыть", "en": "unblock request"},
    "raise_hand": {"ky": "Колумду көтөрүү (мугалимди чакыруу)", "ru": "Поднять руку (позвать учителя)",
                   "en": "Raise my hand (call the teacher)"},
    "hand_raised": {"ky": "Мугалим сиздин колуңузду көрдү.", "ru": "Учитель видит вашу поднятую руку.",
                    "en": "The teacher sees your raised hand."},
}

# Why a page was blocked, by the filter's rule id (filters.decision); unknown ids are shown as is.
RULES: dict[str, dict[str, str]] = {
    "category": {"ky": "Категория бөгөттөлгөн", "ru": "Категория запрещена", "en": "Blocked category"},
    "school.block_list": {"ky": "Мектептин тыюу тизмеси", "ru": "Чёрный список школы",
                          "en": "School block list"},
    "group.block_list": {"ky": "Топтун тыюу тизмеси", "ru": "Чёрный список группы", "en": "Group block list"},
    "ip_literal": {"ky": "Сайттын аты жок дарек (IP)", "ru": "Адрес без имени сайта (IP)",
                   "en": "An address with no site name (IP)"},
    "ban": {
        "ky": "Мугалим интернетти убактылуу жапкан",
        "ru": "Учитель временно запретил интернет",
        "en": "The teacher stopped your internet for now",
    },
    "lesson.not_on_allow_list": {
        "ky": "Сабакта уруксат берилген сайттар гана",
        "ru": "На уроке доступны только разрешённые сайты",
        "en": "Only the lesson's sites are allowed",
    },
    "lesson.no_internet": {"ky": "Сабакта интернет жок", "ru": "На уроке интернет отключён",
                           "en": "No internet during this lesson"},
    "unsupervised.no_internet": {
        "ky": "Мугалимсиз интернет жок (сабактан тышкары)",
        "ru": "Без учителя интернет недоступен (вне урока)",
        "en": "No internet without a teacher (outside a lesson)",
    },
    "unsupervised.not_on_allow_list": {
        "ky": "Сабактан тышкары мектеп уруксат берген сайттар гана",
        "ru": "Вне урока доступны только сайты, разрешённые школой",
        "en": "Outside a lesson only the school's allowed sites open",
    },
    "schedule.outside_hours": {"ky": "Интернет убактысы эмес", "ru": "Вне расписания интернета",
                               "en": "Outside the internet schedule"},
    "schedule.holiday": {"ky": "Майрам күнү интернет жок", "ru": "В праздничный день интернет закрыт",
                         "en": "No internet on a holiday"},
    "download": {"ky": "Мындай файлдарды жүктөөгө болбойт", "ru": "Такие файлы скачивать нельзя",
                 "en": "Files of this kind may not be downloaded"},
    "default.block": {"ky": "Демейки эреже", "ru": "Правило по умолчанию", "en": "Default rule"},
    "default": {"ky": "Демейки эреже", "ru": "Правило по умолчанию", "en": "Default rule"},
}


def t(message_id: str, lang: str) -> str:
    """The message in `lang` (falling back to English, then to the id itself)."""
    catalogue = MESSAGES if message_id in MESSAGES else RULES
    return message(catalogue, message_id, lang) if message_id in catalogue else message_id


def pick_language(accept_language: str | None, default: str = "ky") -> str:
    """The first of ky/ru/en the browser asks for (by q-value), else `default`."""
    return language_from_accept(accept_language, default)


def rule_text(rule: str, lang: str) -> str:
    """Why a page was blocked, in `lang`; an unknown rule id is shown as it is."""
    rule_id = rule or "default"
    return message(RULES, rule_id, lang) if rule_id in RULES else rule
