"""`kalkan-report`: compliance reports for directors and district offices.

    kalkan-report weekly --school "School 1" --week 2026-W49 --lang ky --pdf out.pdf
    kalkan-report weekly --from 2026-09-01 --to 2026-12-31 --pdf term.pdf --csv term/
    kalkan-report make --week 2026-W49          # make and keep a finished week (what Monday's job does)
    kalkan-report send                          # send kept weeks to the district (retries what failed)
    kalkan-report district-enroll --url https://district:8443 --code ABCDE-12345 --fingerprint …
    kalkan-report add-school --name "School 1"  # on the district server: a school and its code

`--state-dir` / `--db` name the server's database as for `kalkan-server`.  The report is the
same as the console's (docs/reports.md); a long range shows a progress bar on stderr.
Messages are in English unless `--lang` or the locale says ky/ru (for the documents, `--lang`
picks the language; default: the school's language).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

HELP = {
    "en": "Compliance reports: the weekly summary for the director (PDF, HTML, CSV) and the "
    "aggregates for the district.",
    "ru": "Отчёты о соблюдении регламента: недельная сводка для директора (PDF, HTML, CSV) и "
    "агрегаты для района.",
    "ky": "Жобонун аткарылышы боюнча отчеттор: директор үчүн жумалык жыйынтык (PDF, HTML, CSV) "
    "жана район үчүн жалпы көрсөткүчтөр.",
}
PROGRESS_FROM = 4  # show a progress bar when more weeks than this are read


class Progress:
    """A plain text bar on stderr: `[#######.............] 12/40 weeks`."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        if total <= PROGRESS_FROM:
            return
        filled = round(self.width * done / total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} weeks")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def _sessions(args):
    from policy_server.db import migrate
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.settings import Settings

    settings = Settings.from_env(state_dir=args.state_dir, db_url=args.db)
    settings.ensure_state_dir()
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    return make_sessionmaker(engine)


def _fail(message: str) -> int:
    print(f"kalkan-report: {message}", file=sys.stderr)
    return 2


def cmd_weekly(args) -> int:
    from policy_server.errors import KalkanError
    from policy_server.summaries import render, service
    from policy_server.web.queries import school_language
    from reports import query

    if not (args.week or (args.date_from and args.date_to)):
        return _fail("give --week YEAR-Www, or --from and --to (YYYY-MM-DD)")
    if not (args.pdf or args.html or args.csv or args.json):
        return _fail("say where to write it: --pdf FILE, --html FILE, --csv FOLDER or --json FILE")
    with _sessions(args)() as db:
        school = query.school_name(db)
        if args.school and args.school.strip().casefold() != school.casefold():
            return _fail(f"this database is the school {school!r}, not {args.school!r}; "
                         "point --state-dir/--db at that school's server")
        language = args.lang or school_language(db) or "ky"
        try:
            if args.week:
                kept = service.get_report(db, args.week)
                if kept is not None:
                    summary = kept.summary
                else:
                    year, week = service.parse_week(args.week)
                    summary = service.compute_week(db, year, week, progress=Progress()).as_dict()
            else:
                first, last = date.fromisoformat(args.date_from), date.fromisoformat(args.date_to)
                summary = service.compute_range(db, first, last, progress=Progress()).as_dict()
        except (KalkanError, ValueError) as exc:
            return _fail(str(exc))
    if args.pdf:
        Path(args.pdf).write_bytes(render.pdf(summary, language))
        print(f"PDF: {args.pdf}")
    if args.html:
        Path(args.html).write_text(render.document_html(summary, language), encoding="utf-8")
        print(f"HTML: {args.html}")
    if args.csv:
        folder = Path(args.csv)
        folder.mkdir(parents=True, exist_ok=True)
        for table in render.TABLES:
            (folder / f"{table}.csv").write_text(render.csv_table(summary, table, language), encoding="utf-8")
        print(f"CSV: {folder}/ ({', '.join(render.TABLES)})")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"JSON: {args.json}")
    return 0


def cmd_make(args) -> int:
    from policy_server.errors import KalkanError
    from policy_server.summaries import service

    with _sessions(args)() as db:
        try:
            year, week = service.parse_week(args.week)
            report, made = service.make_weekly(db, year, week, actor="cli")
        except KalkanError as exc:
            return _fail(str(exc))
        db.commit()
        print(f"{report.period}: {'made and kept' if made else 'already kept'} "
              f"({report.summary['state']}, {report.summary['score']})")
    return 0


def cmd_send(args) -> int:
    from policy_server.district import client

    with _sessions(args)() as db:
        if client.link(db) is None:
            return _fail("this school is not enrolled at a district: "
                         "run `kalkan-report district-enroll` first")
        outcome = client.send_pending(db)
    for period, result in outcome.items():
        print(f"{period}: {result}")
    if not outcome:
        print("nothing to send")
    return 1 if any(r in ("unreachable", "refused") for r in outcome.values()) else 0


def cmd_district_enroll(args) -> int:
    from policy_server.district import client
    from policy_server.errors import KalkanError

    with _sessions(args)() as db:
        try:
            found = client.enroll(db, url=args.url, code=args.code, fingerprint=args.fingerprint)
        except KalkanError as exc:
            return _fail(str(exc))
        except Exception as exc:  # noqa: BLE001 — network errors: say what and how to fix
            return _fail(f"could not reach the district at {args.url}: {exc}")
        db.commit()
        print(f"enrolled at {found.url} as school {found.school_id}")
    return 0


def cmd_add_school(args) -> int:
    from policy_server.district import service

    with _sessions(args)() as db:
        school, code = service.add_school(db, name=args.name, actor="cli", days=args.days)
        db.commit()
        print(f"{school.name}: enrolment code {code} (valid {args.days} days, one use)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="the server's state folder (default: as kalkan-server)")
    common.add_argument("--db", help="database URL (default: SQLite in the state dir)")
    parser = argparse.ArgumentParser(
        prog="kalkan-report",
        description="\n".join(f"[{lang}] {text}" for lang, text in HELP.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    weekly = sub.add_parser("weekly", parents=[common], help="the compliance summary of a week or a range")
    weekly.add_argument("--school", help="the school's name (checked against the database)")
    weekly.add_argument("--week", help="ISO week, e.g. 2026-W49")
    weekly.add_argument("--from", dest="date_from", help="first day of a range, YYYY-MM-DD")
    weekly.add_argument("--to", dest="date_to", help="last day of a range, YYYY-MM-DD")
    weekly.add_argument("--lang", choices=["ky", "ru", "en"], help="language of the document")
    weekly.add_argument("--pdf", help="write the PDF here")
    weekly.add_argument("--html", help="write the HTML document here")
    weekly.add_argument("--csv", help="write every table as CSV into this folder")
    weekly.add_argument("--json", help="write the figures as JSON here")
    weekly.set_defaults(func=cmd_weekly)
    make = sub.add_parser("make", parents=[common], help="make and keep a finished week's summary")
    make.add_argument("--week", required=True)
    make.set_defaults(func=cmd_make)
    send = sub.add_parser("send", parents=[common], help="send kept weeks to the district")
    send.set_defaults(func=cmd_send)
    enroll = sub.add_parser("district-enroll", parents=[common], help="enrol this school at its district")
    enroll.add_argument("--url", required=True)
    enroll.add_argument("--code", required=True)
    enroll.add_argument("--fingerprint", help="the district server certificate's SHA-256 (pinned)")
    enroll.set_defaults(func=cmd_district_enroll)
    add = sub.add_parser("add-school", parents=[common], help="district server: add a school, print its code")
    add.add_argument("--name", required=True)
    add.add_argument("--days", type=int, default=14)
    add.set_defaults(func=cmd_add_school)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
