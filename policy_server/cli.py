"""`kalkan-server`: run the policy server and look after it from the command line.

    kalkan-server run [--db URL] [--host H] [--port P] [--state-dir DIR] [--no-tls] [--workers N|auto]
                      [--log-format text|json]
    kalkan-server migrate
    kalkan-server create-user --role admin|teacher|director|district --username U
                              [--full-name NAME] [--class-name 7a] [--password-stdin]
    kalkan-server enrollment-code [--room ROOM] [--uses N] [--expires 7d|ISO] [--json]
    kalkan-server revoke-agent AGENT_ID
    kalkan-server rebind-agent AGENT_ID [--seat SEAT | --no-seat] [--hostname NAME]
    kalkan-server demo [--json]
    kalkan-server fingerprint
    kalkan-server tls rotate [--name HOST ...] [--replace] [--json]   (make the next certificate)
    kalkan-server tls status [--days 14] [--json]     (which seats hold the next certificate)
    kalkan-server tls activate [--days 14] [--force] [--json]   (serve the next one after a restart)
    kalkan-server tls cancel [--json]                 (withdraw the next certificate)
    kalkan-server backup --out FILE         (SQLite online backup / pg_dump, then checked)
    kalkan-server check-backup FILE
    kalkan-server retention [--days 90] [--apply]
    kalkan-server run-checks [--only CHECK] [--json]   (periodic checks once, e.g. from cron)
    kalkan-server student-labs [ROOM ...] [--clear]     (rooms where students work; ISUO checks)
    kalkan-server lists update [--source URL|RSYNC-URL|TARBALL|FOLDER] [--sha256 HEX] [--force] [--json]
    kalkan-server lists show [--json]                   (category lists: source, published indexes)
    kalkan-server schools add NAME --host H [--host H2] [--name N] [--admin U --password-stdin]
    kalkan-server schools list [--json]
    kalkan-server schools remove NAME [--yes] [--drop-database]   (a running service notices)
    kalkan-server schools hosts NAME --host H [--host H2]          (all its host names; no restart)

`--state-dir` and `--db` work with every command (or KALKAN_STATE_DIR / KALKAN_DB_URL).
`kalkan-server --lang ky|ru|en COMMAND …` picks the language of what it prints (else the
locale: LC_ALL, LC_MESSAGES, LANG; else English).  Machine output (`--json`, the bare
enrolment code, the fingerprint) is the same in every language.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from policy_server.errors import KalkanError
from policy_server.settings import Settings
from policy_server.web.i18n import LANGUAGES, translate

ACTOR_CLI = "cli"
GC_GEN0_THRESHOLD = 20_000
# POSIX order: LC_ALL overrides LC_MESSAGES, which overrides LANG; an empty value does not count.
LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")
# English when nothing says otherwise (not the web console's Kyrgyz): a server's terminal
# (ssh, cron mail, the systemd journal) is often LANG=C or has no Cyrillic font, and an
# English message is the one an IT person can paste into a search or a bug report.
DEFAULT_LANGUAGE = "en"

_language = DEFAULT_LANGUAGE  # set once by main() from --lang or the locale


def choose_language(explicit: str | None = None, environ: dict[str, str] | None = None) -> str:
    """`--lang` if given, else the first set locale variable's language if it is ky/ru/en, else English.

    Only the first set variable counts: LC_ALL=C with LANG=ru_RU.UTF-8 means English, as for
    every other program on the machine (the agent's `agent/i18n.py` decides the same way)."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    for name in LOCALE_VARIABLES:
        value = env.get(name)
        if value:
            primary = value.strip().lower().replace("-", "_").split("_")[0].split(".")[0].split("@")[0]
            return primary if primary in LANGUAGES else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def _(message: str, **params: object) -> str:
    """`message` (an English message id of policy_server/web/locale) in the chosen language."""
    return translate(_language, message, **params)


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "school", None):  # one school of a many-schools service (docs/operations.md)
        from policy_server.tenancy.schools import find, school_settings

        service = _service_settings(args)
        settings = school_settings(service, find(service, args.school))
        settings.named_explicitly = True
        return settings
    return _service_settings(args)


def _service_settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(
        state_dir=getattr(args, "state_dir", None), db_url=getattr(args, "db", None),
        host=getattr(args, "host", None), port=getattr(args, "port", None),
        tls=False if getattr(args, "no_tls", False) else None,
        level=getattr(args, "level", None),
    )
    # A place the person named (option or environment) is used as it is; a default or
    # configured one is checked against a stray empty database (config_file).
    settings.named_explicitly = bool(getattr(args, "state_dir", None) or getattr(args, "db", None)
                                     or os.environ.get("KALKAN_STATE_DIR") or os.environ.get("KALKAN_DB_URL"))
    return settings


def _session(settings: Settings, *, may_create: bool = False):
    from policy_server.config_file import check_not_a_stray_database
    from policy_server.db import migrate
    from policy_server.db.session import make_engine, make_sessionmaker

    if not may_create:  # never quietly an empty database next to the school's real one
        check_not_a_stray_database(settings)
    settings.ensure_state_dir()
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    return make_sessionmaker(engine)()


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from policy_server.certs.served import remember_served
    from policy_server.tls import cert_fingerprint, ensure_school_ca, ensure_server_cert
    from policy_server.workers import check_workers, default_workers

    settings = _settings(args)
    from policy_server.config_file import check_not_a_stray_database
    from policy_server.tenancy.schools import is_multi_school

    if is_multi_school(settings) and not getattr(args, "school", None):
        return _run_schools(args, settings)
    check_not_a_stray_database(settings)
    settings.ensure_state_dir()
    workers = check_workers(default_workers(settings.database_url) if args.workers == "auto"
                            else _whole_number(args.workers, "--workers"), settings.database_url)
    ssl = {}
    scheme = "http"
    if settings.tls:
        ensure_server_cert(settings.cert_path, settings.key_path)
        remember_served(settings.cert_path)  # what the pages show until the next start (tls activate)
        ssl = {"ssl_certfile": str(settings.cert_path), "ssl_keyfile": str(settings.key_path)}
        scheme = "https"
        print(_("server certificate SHA-256: %(fingerprint)s",
                fingerprint=cert_fingerprint(settings.cert_path)), flush=True)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    common = {"host": settings.host, "port": settings.port, "log_level": args.log_level,
              "timeout_graceful_shutdown": 3, **ssl}
    if getattr(args, "forwarded_allow_ips", None):  # replicas behind nginx (docs/operations.md)
        common["forwarded_allow_ips"] = args.forwarded_allow_ips
    if getattr(args, "log_format", "text") == "json":  # docs/operations.md "Logs"
        from policy_server.operations.logs import uvicorn_log_config

        common["log_config"] = uvicorn_log_config(args.log_level, "json")
    if workers == 1:
        from policy_server.app import create_app

        app = create_app(settings)
        _tune_gc()
        print(_("Kalkan server on %(url)s (state: %(state_dir)s, database: %(database)s)",
                url=f"{scheme}://{host}:{settings.port}", state_dir=settings.state_dir,
                database=app.state.engine.dialect.name), flush=True)
        uvicorn.run(app, **common)
        return 0
    # Several workers (PostgreSQL): what must happen once happens here, before they start;
    # each worker builds its app from the same settings (policy_server/workers.py).
    from policy_server.db import migrate
    from policy_server.db.session import make_engine
    from policy_server.workers import SETTINGS_ENV, settings_to_env

    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    engine.dispose()
    ensure_school_ca(settings.ca_cert_path, settings.ca_key_path)
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    print(_("Kalkan server on %(url)s (state: %(state_dir)s, database: postgresql, %(workers)s workers)",
            url=f"{scheme}://{host}:{settings.port}", state_dir=settings.state_dir, workers=workers),
          flush=True)
    uvicorn.run("policy_server.workers:worker_app", factory=True, workers=workers, **common)
    return 0


def _run_schools(args: argparse.Namespace, settings: Settings) -> int:
    """`run` on a service with `schools.json`: every school's app behind one listener, chosen
    by the request's host name (policy_server/tenancy)."""
    import uvicorn

    from policy_server.certs.served import remember_served
    from policy_server.tenancy import dispatch
    from policy_server.tenancy.schools import load
    from policy_server.tls import cert_fingerprint, ensure_server_cert
    from policy_server.workers import SETTINGS_ENV, check_workers, default_workers, settings_to_env

    settings.ensure_state_dir()
    schools = load(settings)
    workers = check_workers(default_workers(settings.database_url) if args.workers == "auto"
                            else _whole_number(args.workers, "--workers"), settings.database_url)
    if workers > 1 and any(not (e.db_url or "").startswith("postgresql") for e in schools):
        workers = 1  # a school on SQLite has one writer: one process for the whole service
    common = {"host": settings.host, "port": settings.port, "log_level": args.log_level,
              "timeout_graceful_shutdown": 3}
    scheme = "http"
    if settings.tls:
        ensure_server_cert(settings.cert_path, settings.key_path, extra_names=_school_cert_names(settings))
        remember_served(settings.cert_path)  # what the pages show until the next start (tls activate)
        common.update(ssl_certfile=str(settings.cert_path), ssl_keyfile=str(settings.key_path))
        scheme = "https"
        print(_("server certificate SHA-256: %(fingerprint)s",
                fingerprint=cert_fingerprint(settings.cert_path)), flush=True)
    if getattr(args, "log_format", "text") == "json":
        from policy_server.operations.logs import uvicorn_log_config

        common["log_config"] = uvicorn_log_config(args.log_level, "json")
    for entry in schools:
        urls = ", ".join(f"{scheme}://{h}:{settings.port}" for h in entry.hosts)
        print(f"  {entry.slug}: {urls}", flush=True)
    print(_("Kalkan server on %(url)s (state: %(state_dir)s, database: %(database)s)",
            url=f"{scheme}://{settings.host}:{settings.port}", state_dir=settings.state_dir,
            database=f"{len(schools)} schools"), flush=True)
    if workers == 1:
        service = dispatch.SchoolsService(settings)
        _tune_gc()
        uvicorn.run(service, **common)
        return 0
    dispatch.migrate_all(settings)
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    uvicorn.run("policy_server.tenancy.dispatch:service_worker_app", factory=True, workers=workers, **common)
    return 0


def _school_cert_names(settings: Settings) -> list[str]:
    """The schools' host names (not addresses) a new server certificate names (none: one school)."""
    from policy_server.tenancy.schools import load

    return [h for e in load(settings) for h in e.hosts if not h[:1].isdigit() and ":" not in h]


def cmd_schools(args: argparse.Namespace) -> int:
    """`schools add` / `schools list`: the schools of a many-schools service (docs/operations.md)."""
    from policy_server.tenancy import texts
    from policy_server.tenancy.schools import add_school, load

    settings = _settings(args)
    if args.schools_command == "add":
        entry = add_school(settings, slug=args.slug, name=args.name or args.slug, hosts=args.host,
                           db_url=args.school_db, actor=ACTOR_CLI)
        if args.admin:
            from policy_server.db.session import make_engine, make_sessionmaker
            from policy_server.people.service import create_person
            from policy_server.tenancy.schools import school_settings

            password = _read_password(args)
            engine = make_engine(school_settings(settings, entry).database_url)
            try:
                with make_sessionmaker(engine)() as db:
                    create_person(db, username=args.admin, role="admin", password=password, actor=ACTOR_CLI)
                    db.commit()
            finally:
                engine.dispose()
        print(translate(_language, texts.ADDED, slug=entry.slug, name=entry.name,
                        hosts=", ".join(entry.hosts)))
        print(translate(_language, texts.SERVED_SOON))
        return 0
    if args.schools_command == "remove":
        return _remove_school(args, settings)
    if args.schools_command == "hosts":
        return _set_school_hosts(args, settings)
    schools = load(settings)
    if args.json:
        print(json.dumps([{k: v for k, v in e.to_json().items() if k != "db_url"} for e in schools]))
        return 0
    if not schools:
        print(translate(_language, texts.SINGLE))
    for entry in schools:
        print(f"{entry.slug}\t{entry.name}\t{', '.join(entry.hosts)}")
    return 0


def _remove_school(args: argparse.Namespace, settings: Settings) -> int:
    """`schools remove NAME [--yes] [--drop-database]`: says what it does first; without --yes
    nothing changes; the database is kept unless --drop-database and the short name typed."""
    from policy_server.tenancy import texts
    from policy_server.tenancy.schools import database_label, drop_school_database, find, remove_school

    entry = find(settings, args.slug)
    where = {"database": database_label(settings, entry), "folder": entry.state_dir(settings),
             "slug": entry.slug}
    print(translate(_language, texts.REMOVE_PLAN, slug=entry.slug, name=entry.name,
                    hosts=", ".join(entry.hosts)))
    print(translate(_language, texts.DROPS_DATABASE if args.drop_database else texts.KEEPS_DATABASE, **where))
    if not args.yes:
        raise KalkanError(f"nothing was removed: give --yes to remove the school {entry.slug!r}",
                          code="schools.remove_needs_yes", params={"slug": entry.slug})
    if args.drop_database:
        print(translate(_language, texts.TYPE_SLUG, slug=entry.slug), flush=True)
        typed = sys.stdin.readline().strip()
        if typed != entry.slug:
            raise KalkanError(f"nothing was removed: the short name typed was not {entry.slug!r}",
                              code="schools.drop_not_confirmed", params={"slug": entry.slug})
    remove_school(settings, slug=entry.slug, actor=ACTOR_CLI)
    print(translate(_language, texts.REMOVED, slug=entry.slug), flush=True)
    if args.drop_database:
        dropped = drop_school_database(settings, entry, actor=ACTOR_CLI)
        print(translate(_language, texts.DROPPED, database=dropped))
    return 0


def _set_school_hosts(args: argparse.Namespace, settings: Settings) -> int:
    """`schools hosts NAME --host H [--host H2]`: the school's host names, all of them."""
    from policy_server.tenancy import texts
    from policy_server.tenancy.schools import set_hosts

    before, after = set_hosts(settings, slug=args.slug, hosts=args.host, actor=ACTOR_CLI)
    if before.hosts == after.hosts:
        print(translate(_language, texts.HOSTS_SAME, slug=after.slug, hosts=", ".join(after.hosts)))
        return 0
    print(translate(_language, texts.HOSTS_CHANGED, slug=after.slug, hosts=", ".join(after.hosts),
                    old=", ".join(before.hosts)))
    if settings.tls and set(after.hosts) - set(before.hosts):
        print(translate(_language, texts.CERT_HINT))
    return 0


def _whole_number(raw: str, option: str) -> int:
    if not raw.strip().isdigit():
        raise KalkanError(f"{option} {raw!r} is not a whole number; give e.g. 2, or 'auto'",
                          code="cli.not_a_number", params={"option": option, "value": raw})
    return int(raw)


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server.

    Ingest makes many short-lived objects (parsed JSON, pydantic models), so the default
    gen-0 threshold (700) runs a collection every few events, and each older-generation pass
    walks every object the app built at start (SQLAlchemy, pydantic, FastAPI: hundreds of
    thousands).  Freezing those start-up objects and collecting less often measured 30-40 %
    more events/s (benchmarks/server/RESULTS.md); memory stays bounded by the higher
    threshold.  Nothing here makes cycles that need prompt collection."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)


def cmd_migrate(args: argparse.Namespace) -> int:
    from policy_server.db import migrate

    with _session(_settings(args), may_create=True) as db:
        current = migrate.current_revision(db.get_bind())
        print(_("database at revision %(current)s (head %(head)s)", current=current,
                head=migrate.head_revision()))
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise KalkanError("no password on standard input: pipe it in, e.g. `echo '…' | kalkan-server …`",
                              code="cli.no_password_on_stdin")
        return password
    first = getpass.getpass(_("Password: "))
    if first != getpass.getpass(_("Password again: ")):
        raise KalkanError("the two passwords differ; run the command again", code="cli.passwords_differ")
    return first


def cmd_create_user(args: argparse.Namespace) -> int:
    from policy_server.people.service import create_person

    password = _read_password(args)
    with _session(_settings(args)) as db:
        person = create_person(db, username=args.username, role=args.role, password=password, actor=ACTOR_CLI,
                               full_name=args.full_name or "", class_name=args.class_name)
        db.commit()
        print(_("created %(role)s '%(username)s'", role=person.role, username=person.username))
    return 0


def cmd_enrollment_code(args: argparse.Namespace) -> int:
    from policy_server.agents.service import create_enrollment_code, parse_expiry

    with _session(_settings(args)) as db:
        expires = parse_expiry(args.expires)
        code = create_enrollment_code(db, actor=ACTOR_CLI, room=args.room, uses=args.uses, expires_at=expires)
        db.commit()
    if args.json:
        print(json.dumps({"code": code, "room": args.room, "uses": args.uses,
                          "expires_at": expires.isoformat()}))
    else:
        print(code)
        print(_("(room %(room)s, %(uses)s use(s), expires %(expires)s UTC)", room=args.room or "-",
                uses=args.uses, expires=f"{expires:%Y-%m-%d %H:%M}"), file=sys.stderr)
    return 0


def cmd_revoke_agent(args: argparse.Namespace) -> int:
    from policy_server.agents.service import revoke_agent

    with _session(_settings(args)) as db:
        ws = revoke_agent(db, agent_id=args.agent_id, actor=ACTOR_CLI)
        db.commit()
        print(_("revoked the token of %(hostname)s (%(agent_id)s); it must enrol again",
                hostname=ws.hostname, agent_id=ws.id))
    return 0


def cmd_rebind_agent(args: argparse.Namespace) -> int:
    from policy_server.agents.binding import rebind_agent

    with _session(_settings(args)) as db:
        ws = rebind_agent(db, agent_id=args.agent_id, actor=ACTOR_CLI, seat=args.seat,
                          hostname=args.hostname, clear_seat=args.no_seat)
        db.commit()
        # translated in policy_server/agents/locale (the domain's catalog, not the shared one)
        print(translate(_language, "workstation %(agent_id)s is now bound to seat %(seat)s, "
                        "hostname %(hostname)s", agent_id=ws.id, seat=ws.seat or "-", hostname=ws.hostname))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from policy_server.demo import seed_demo

    settings = _settings(args)
    with _session(settings) as db:
        result = seed_demo(db, settings.state_dir)
        db.commit()
    if args.json:
        print(json.dumps({"school": result.school, "room": result.room, "logins": result.logins,
                          "enrollment_code": result.enrollment_code}))
        return 0
    print(_("School: %(school)s, room %(room)s", school=result.school, room=result.room))
    for username, password in result.logins.items():
        print(_("login: %(username)s  password: %(password)s", username=username, password=password))
    print(_("enrollment code (room %(room)s, 50 uses, 7 days): %(code)s", room=result.room,
            code=result.enrollment_code))
    return 0


def backup_lines(report) -> list[str]:
    """`BackupReport.lines()` in the chosen language (English: the same lines, a test keeps them so)."""
    out = [_("%(path)s: %(kind)s, %(size)s bytes", path=report.path, kind=report.kind,
             size=f"{report.size_bytes:,}")]
    if report.revision:
        out.append(_("schema revision %(revision)s", revision=report.revision))
    if report.row_counts:  # table names stay as they are: they are the database's words
        out.append(", ".join(f"{name}: {n:,}" for name, n in report.row_counts.items()))
    return out


def retention_lines(plan) -> list[str]:
    """`RetentionPlan.lines()` in the chosen language (English: the same lines)."""
    from policy_server.db.retention import RETAINED_TYPES

    out = [_("records of internet use older than %(days)s days (before %(cutoff)s UTC):", days=plan.days,
             cutoff=f"{plan.cutoff:%Y-%m-%d %H:%M}")]
    out += [f"  {t}: {plan.removable.get(t, 0):,}" for t in RETAINED_TYPES]
    out.append("  " + _("kept because an open incident holds them: %(count)s",
                        count=f"{plan.kept_for_open_incidents:,}"))
    out.append("  " + _("resolved incidents losing their raw events (the incidents stay): %(count)s",
                        count=f"{len(plan.incidents_affected):,}"))
    out.append("  " + _("report queue: copies of reports removed: %(copies)s; decided items losing seats "
                        "and comments: %(items)s", copies=f"{plan.queue_copies:,}",
                        items=f"{plan.queue_items_scrubbed:,}"))
    out.append("  " + _("lesson summaries losing students' names and seats (the counts stay): %(count)s",
                        count=f"{plan.lessons_depersonalised:,}"))
    from policy_server.db.retention import personal_lines

    return out + personal_lines(plan, _language)


def cmd_backup(args: argparse.Namespace) -> int:
    from policy_server.audit import audit
    from policy_server.db.backup import make_backup

    settings = _settings(args)
    with _session(settings) as db:  # migrated, so the backup carries the current schema
        db.commit()
    report = make_backup(settings.database_url, Path(args.out))
    with _session(settings) as db:
        audit(db, actor=ACTOR_CLI, action="backup.created", target=str(report.path),
              detail={"kind": report.kind, "bytes": report.size_bytes, "rows": report.row_counts,
                      "clauses": ["000 §3.2"]})
        db.commit()
    print(_("backup written and checked:"))
    for line in backup_lines(report):
        print(f"  {line}")
    print(_("Keep a copy off this machine; copy the state dir's tls/ and ca/ folders as well."))
    return 0


def cmd_check_backup(args: argparse.Namespace) -> int:
    from policy_server.db.backup import check_backup

    report = check_backup(Path(args.file))  # needs no server database: checks the file alone
    print(_("backup OK:"))
    for line in backup_lines(report):
        print(f"  {line}")
    return 0


def _retention_days(args: argparse.Namespace) -> int:
    from policy_server.db.retention import days_from_env

    return args.days if args.days is not None else days_from_env()


def cmd_retention(args: argparse.Namespace) -> int:
    from policy_server.db.retention import apply_retention, plan_retention

    days = _retention_days(args)
    with _session(_settings(args)) as db:
        if args.apply:
            plan = apply_retention(db, actor=ACTOR_CLI, days=days)
            db.commit()
        else:
            plan = plan_retention(db, days=days)
    for line in retention_lines(plan):
        print(line)
    if args.apply:
        print(_("removed %(total)s events; recorded in the audit log (retention.applied)",
                total=f"{plan.total:,}"))
    else:
        print(_("dry run: nothing removed. Run again with --apply to remove them."))
    return 0


def cmd_run_checks(args: argparse.Namespace) -> int:
    """Run every periodic check once (cron, or by hand); the server also runs them itself."""
    from policy_server.checks.periodic import PERIODIC_CHECKS, run_check
    from policy_server.db.models import utcnow

    names = args.only or list(PERIODIC_CHECKS)
    unknown = [n for n in names if n not in PERIODIC_CHECKS]
    if unknown:
        raise KalkanError(f"unknown check {', '.join(unknown)}; the checks are: {', '.join(PERIODIC_CHECKS)}",
                          code="cli.unknown_check",
                          params={"names": ", ".join(unknown), "checks": ", ".join(PERIODIC_CHECKS)})
    results: dict[str, int | str] = {}
    failed = False
    with _session(_settings(args)) as db:
        for name in names:
            try:
                results[name] = run_check(db, name, now=utcnow())
            except Exception as exc:  # noqa: BLE001 — report it and go on with the other checks
                failed = True
                results[name] = f"failed: {type(exc).__name__}: {exc}"  # --json keeps English
    if args.json:
        print(json.dumps(results))
    else:
        for name, outcome in results.items():
            if isinstance(outcome, str):
                print(_("%(check)s: failed: %(error)s", check=name, error=outcome.removeprefix("failed: ")))
            else:
                print(_("%(check)s: %(count)s new finding(s)", check=name, count=outcome))
    return 1 if failed else 0


def cmd_student_labs(args: argparse.Namespace) -> int:
    """Show or set the rooms where students work (ISUO there outside a lesson is an incident)."""
    from sqlalchemy import select

    from policy_server.db.models import Room
    from policy_server.policies.service import amend_policy, current_bundle

    with _session(_settings(args)) as db:
        if not args.rooms and not args.clear:
            labs = current_bundle(db).isuo.student_lab_rooms
            print(", ".join(labs) if labs else _("no room is marked as a student lab"))
            return 0
        rooms = [] if args.clear else list(dict.fromkeys(args.rooms))
        known = set(db.scalars(select(Room.name)))
        missing = [r for r in rooms if r not in known]
        if missing:
            raise KalkanError(f"no room named {', '.join(missing)}; rooms are made by enrollment codes "
                              f"(--room); existing rooms: {', '.join(sorted(known)) or 'none'}",
                              code="cli.unknown_room",
                              params={"names": ", ".join(missing), "rooms": ", ".join(sorted(known)) or "-"})

        def change(bundle):
            bundle.isuo.student_lab_rooms = rooms
            return bundle

        amend_policy(db, actor=ACTOR_CLI, comment="student labs: " + (", ".join(rooms) or "none"),
                     change=change)
        db.commit()
    print(_("student labs: %(rooms)s", rooms=", ".join(rooms) or _("none")))
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from policy_server.tls import cert_fingerprint, ensure_server_cert

    settings = _settings(args)
    settings.ensure_state_dir()
    # as `run` would make it (a many-schools service: with the schools' host names)
    ensure_server_cert(settings.cert_path, settings.key_path, extra_names=_school_cert_names(settings))
    print(cert_fingerprint(settings.cert_path))
    from policy_server.certs import texts
    from policy_server.certs.rotation import CertFiles, next_fingerprint

    upcoming = next_fingerprint(CertFiles.of(settings))
    if upcoming:  # on stderr: the machine output stays the served fingerprint alone
        print(translate(_language, texts.FINGERPRINT_NEXT, fingerprint=upcoming), file=sys.stderr)
    return 0


def cmd_tls(args: argparse.Namespace) -> int:
    """`tls rotate|status|activate`: the server certificate's rotation (docs/operations.md)."""
    from policy_server.certs import cli as tls_cli

    return tls_cli.run(args, _service_settings(args), lambda message, **params: translate(
        _language, message, **params))


def cmd_lists(args: argparse.Namespace) -> int:
    from policy_server.filtering import cli as lists_cli

    return lists_cli.run(args, _settings(args), _session)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="folder for the database, certificates and CA "
                                            "(default /var/lib/kalkan-server as root)")
    common.add_argument("--db", help="database URL (default: SQLite in the state dir), "
                                     "e.g. postgresql+psycopg://kalkan:PASSWORD@localhost/kalkan")
    common.add_argument("--school", help="on a service of many schools: the school (its short name, "
                                         "kalkan-server schools list) the command is for")
    parser = argparse.ArgumentParser(prog="kalkan-server", description="Kalkan policy server")
    parser.add_argument("--lang", choices=LANGUAGES,
                        help="language of the messages (default: from LC_ALL/LC_MESSAGES/LANG, else en)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="serve the API and web console")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default 8443)")
    run.add_argument("--no-tls", action="store_true", help="plain HTTP (tests and a reverse proxy only)")
    run.add_argument("--workers", default=os.environ.get("KALKAN_WORKERS", "auto"),
                     help="server processes: 'auto' (default: 1 on SQLite; on PostgreSQL one per core, "
                          "at most 2) or a number; more than 1 needs PostgreSQL")
    run.add_argument("--forwarded-allow-ips", default=os.environ.get("KALKAN_FORWARDED_ALLOW_IPS"),
                     help="behind a load balancer (docs/operations.md \"Scale out\"): the addresses of the "
                          "proxies whose X-Forwarded-For/-Proto headers are believed (comma-separated); "
                          "the login throttle then counts the client's real address")
    run.add_argument("--level", choices=["school", "district"],
                     help="school (default) or district (a console over the schools' weekly aggregates)")
    run.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", default="text", choices=["text", "json"],
                     help="json: one JSON object a line (for journald, Loki, Elasticsearch)")
    run.set_defaults(func=cmd_run)

    sub.add_parser("migrate", parents=[common], help="apply database migrations"
                   ).set_defaults(func=cmd_migrate)

    user = sub.add_parser("create-user", parents=[common], help="create a login")
    user.add_argument("--role", required=True, choices=["admin", "teacher", "director", "district"])
    user.add_argument("--username", required=True)
    user.add_argument("--full-name")
    user.add_argument("--class-name", help="the class this teacher is class teacher of, e.g. 7a")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.set_defaults(func=cmd_create_user)

    code = sub.add_parser("enrollment-code", parents=[common], help="make a code to enrol workstations")
    code.add_argument("--room", help="the lab the workstations belong to")
    code.add_argument("--uses", type=int, default=1, help="how many workstations may use it (default 1)")
    code.add_argument("--expires", default="7d", help="'7d', '12h', '30m' or an ISO time (default 7d)")
    code.add_argument("--json", action="store_true")
    code.set_defaults(func=cmd_enrollment_code)

    revoke = sub.add_parser("revoke-agent", parents=[common], help="revoke a workstation's token")
    revoke.add_argument("agent_id")
    revoke.set_defaults(func=cmd_revoke_agent)

    rebind = sub.add_parser("rebind-agent", parents=[common],
                            help="change the seat/hostname a workstation is bound to")
    rebind.add_argument("agent_id")
    rebind_seat = rebind.add_mutually_exclusive_group()
    rebind_seat.add_argument("--seat", help="the new seat name")
    rebind_seat.add_argument("--no-seat", action="store_true", help="no seat")
    rebind.add_argument("--hostname", help="the new hostname")
    rebind.set_defaults(func=cmd_rebind_agent)

    demo = sub.add_parser("demo", parents=[common], help="seed a demo school and print its logins")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("fingerprint", parents=[common], help="print the server certificate's SHA-256"
                   ).set_defaults(func=cmd_fingerprint)

    backup = sub.add_parser("backup", parents=[common], help="write a consistent copy of the database "
                                                             "(the server may keep running) and check it")
    backup.add_argument("--out", required=True,
                        help="the backup file to create, e.g. /backup/kalkan-2025-03-01")
    backup.set_defaults(func=cmd_backup)

    check = sub.add_parser("check-backup", help="check that a backup file is complete and restorable")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_backup)

    retention = sub.add_parser("retention", parents=[common],
                               help="remove the records of minors' internet use (web.usage, web.blocked, "
                                    "web.alert, web.unblock_request, web.report, net.bypass, the report "
                                    "queue's copies, names in lesson summaries) older than --days (default "
                                    "90, or KALKAN_RETENTION_DAYS); dry run without --apply")
    retention.add_argument("--days", type=int, help="keep this many days (default 90)")
    retention.add_argument("--apply", action="store_true", help="really remove them (default: only show)")
    retention.set_defaults(func=cmd_retention)

    checks = sub.add_parser("run-checks", parents=[common],
                            help="run the periodic checks once (weekly antivirus scan overdue, "
                                 "ISUO cross-checks); the running server also runs them itself")
    checks.add_argument("--only", action="append", metavar="CHECK",
                        help="run only this check (repeatable): av.full_scan_overdue, isuo.storage, "
                             "isuo.unlocked, isuo.cross")
    checks.add_argument("--json", action="store_true")
    checks.set_defaults(func=cmd_run_checks)

    labs = sub.add_parser("student-labs", parents=[common],
                          help="show or set the rooms where students work (ISUO used there outside "
                               "a lesson is an incident)")
    labs.add_argument("rooms", nargs="*", default=None, help="room names; none given: show them")
    labs.add_argument("--clear", action="store_true", help="no room is a student lab")
    labs.set_defaults(func=cmd_student_labs)

    lists = sub.add_parser("lists", parents=[common], help="category lists: update (fetch, compile, "
                                                           "publish to the seats) or show")
    lists.add_argument("action", choices=["update", "show"])
    lists.add_argument("--source", help="UT1 tarball URL (http/https), an rsync://host/module/path "
                                        "(tarball or tree), or a local tarball or folder; "
                                        "remembered for the weekly update")
    lists.add_argument("--sha256", help="expected SHA-256 of the tarball (refused if it differs)")
    lists.add_argument("--force", action="store_true", help="download and publish even if unchanged")
    lists.add_argument("--json", action="store_true")
    lists.set_defaults(func=cmd_lists)
    service = argparse.ArgumentParser(add_help=False)  # the certificate is the whole service's
    service.add_argument("--state-dir", help="folder for the database, certificates and CA")
    service.add_argument("--db", help="database URL (default: SQLite in the state dir)")
    tls = sub.add_parser("tls", help="rotate the server certificate without enrolling the seats again")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True)
    rotate = tls_sub.add_parser("rotate", parents=[service],
                                help="make the next certificate (a new key): announced, not served yet")
    rotate.add_argument("--name", action="append", metavar="HOST",
                        help="another host name or address for the next certificate (repeatable); it also "
                             "gets the current names and every school's hosts")
    rotate.add_argument("--replace", action="store_true", help="replace a next certificate made before")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=cmd_tls)
    tls_status = tls_sub.add_parser("status", parents=[service],
                                    help="the served and next certificates; which seats hold the next one")
    tls_status.add_argument("--days", type=int, default=14,
                            help="seats seen within these days count as in use (default 14)")
    tls_status.add_argument("--json", action="store_true")
    tls_status.set_defaults(func=cmd_tls)
    activate = tls_sub.add_parser("activate", parents=[service],
                                  help="make the next certificate the served one (after a restart)")
    activate.add_argument("--days", type=int, default=14,
                          help="refuse while a seat seen within these days lacks the next pin (default 14)")
    activate.add_argument("--force", action="store_true",
                          help="activate anyway: the seats without the next pin must be enrolled again")
    activate.add_argument("--json", action="store_true")
    activate.set_defaults(func=cmd_tls)
    cancel = tls_sub.add_parser("cancel", parents=[service],
                                help="withdraw the next certificate (key deleted; the seats drop its pin)")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(func=cmd_tls)
    schools = sub.add_parser("schools", help="many schools on one service: add, list, remove a school, "
                                               "set its host names")
    schools_sub = schools.add_subparsers(dest="schools_command", required=True)
    add = schools_sub.add_parser("add", parents=[common], help="add a school (its own database and folder)")
    add.add_argument("slug", help="short name, e.g. school-12 (lowercase letters, digits, '-')")
    add.add_argument("--name", help="the school's name as people read it")
    add.add_argument("--host", action="append", required=True,
                     help="a host name the school's people and seats use (repeat for several)")
    add.add_argument("--school-db", help="the school's database URL (default: a new PostgreSQL database "
                                         "kalkan_<slug> on the service's server, or SQLite in its folder)")
    add.add_argument("--admin", help="also create the school's responsible person with this username")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the admin's password from standard input")
    add.set_defaults(func=cmd_schools)
    remove = schools_sub.add_parser("remove", parents=[common],
                                    help="stop serving a school (a running service notices within seconds)")
    remove.add_argument("slug", help="the school's short name (kalkan-server schools list)")
    remove.add_argument("--yes", action="store_true", help="do it (without: only say what it would do)")
    remove.add_argument("--drop-database", action="store_true",
                        help="also drop the school's database (after typing its short name); default: kept")
    remove.set_defaults(func=cmd_schools)
    hosts = schools_sub.add_parser("hosts", parents=[common],
                                   help="set a school's host names (a running service re-routes in seconds)")
    hosts.add_argument("slug", help="the school's short name (kalkan-server schools list)")
    hosts.add_argument("--host", action="append", required=True,
                       help="a host name the school's people and seats use (repeat for several; all of them)")
    hosts.set_defaults(func=cmd_schools)
    listing = schools_sub.add_parser("list", parents=[common], help="the schools of this service")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_schools)
    return parser


def main(argv: list[str] | None = None) -> int:
    global _language
    args = build_parser().parse_args(argv)
    _language = choose_language(args.lang)
    try:
        return args.func(args) or 0
    except KalkanError as exc:
        print(f"kalkan-server: {exc.in_language(_language)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad database URL and similar
        print(f"kalkan-server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
