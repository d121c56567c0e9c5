"""`kalkan-report`: compliance reports for directors and district offices.

Not built yet: the weekly summary (PDF/HTML/CSV) is a later issue.  For now the
command explains itself in the three languages and exits, so that packaging and
scripts can rely on it existing.
"""

from __future__ import annotations

import argparse
import sys

HELP = {
    "en": "Compliance reports (weekly summary for the director, aggregates for the district). "
    "Not available yet in this version.",
    "ru": "Отчёты о соблюдении регламента (еженедельная сводка для директора, агрегаты для района). "
    "В этой версии пока недоступны.",
    "ky": "Жобонун аткарылышы боюнча отчеттор (директор үчүн жумалык жыйынтык, район үчүн жалпы "
    "көрсөткүчтөр). Бул версияда азырынча жок.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kalkan-report",
        description="\n".join(f"[{lang}] {text}" for lang, text in HELP.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
