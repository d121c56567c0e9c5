"""`kalkan-agent`: enrol a workstation, run the agent, show its status, uninstall.

    kalkan-agent enroll --server https://SERVER:8443 --code CODE [--seat S] [--fingerprint SHA256]
    kalkan-agent run [--collectors heartbeat,usb] [--platform linux|fake]
    kalkan-agent status [--json]
    kalkan-agent uninstall [--purge]

The state dir is `/var/lib/kalkan-agent` unless `--state-dir` or `KALKAN_AGENT_STATE`
says otherwise.  Domain modules add their own subcommands (see SUBCOMMAND_MODULES).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.collectors.registry import COLLECTORS, load_collector_class
from agent.i18n import choose_language, message
from agent.outbox import Outbox
from agent.runtime import PLATFORMS, AgentRuntime
from agent.server_client import ServerClient, ServerError, TransportError
from agent.state import AgentConfig, AgentState, NotEnrolled, StatePaths
from agent.tls import PinMismatch, fetch_certificate, normalise_fingerprint, pretty_fingerprint
from agent.version import agent_version

# Each module, if importable, has `register(subparsers)` adding its own subcommands.
SUBCOMMAND_MODULES = (
    "agent.integrity.cli",
    "agent.antivirus.cli",
    "agent.usb.cli",
    "agent.proxy.cli",
    "agent.idle.cli",
    "agent.network.cli",
)

STATUS_FRESH_S = 20.0  # status.json older than this: the agent is not running

# Headings of `status`, in the language of LC_ALL/LC_MESSAGES/LANG (ky, ru, else en).
_TEXT: dict[str, dict[str, str]] = {
    "title": {"en": "Kalkan agent", "ru": "Агент Kalkan", "ky": "Kalkan агенти"},
    "enrolled": {"en": "Enrolled", "ru": "Зарегистрирован", "ky": "Катталган"},
    "agent_id": {"en": "Agent id", "ru": "Идентификатор агента", "ky": "Агенттин идентификатору"},
    "server": {"en": "Server", "ru": "Сервер", "ky": "Сервер"},
    "reachable": {"en": "Server reachable", "ru": "Сервер доступен", "ky": "Сервер жеткиликтүү"},
    "running": {"en": "Agent running", "ru": "Агент работает", "ky": "Агент иштеп жатат"},
    "policy": {"en": "Policy version", "ru": "Версия политики", "ky": "Саясаттын версиясы"},
    "outbox": {"en": "Events waiting to be sent", "ru": "Событий ждут отправки",
               "ky": "Жөнөтүүнү күткөн окуялар"},
    "dropped": {"en": "Events dropped (outbox full)", "ru": "Отброшено событий (очередь полна)",
                "ky": "Таштанды окуялар (кезек толду)"},
    "rejected": {"en": "Events rejected by the server", "ru": "Событий отклонено сервером",
                 "ky": "Сервер четке каккан окуялар"},
    "collectors": {"en": "Collectors", "ru": "Сборщики", "ky": "Чогулткучтар"},
    "yes": {"en": "yes", "ru": "да", "ky": "ооба"},
    "no": {"en": "no", "ru": "нет", "ky": "жок"},
    "unknown": {"en": "unknown", "ru": "неизвестно", "ky": "белгисиз"},
    "none": {"en": "none", "ru": "нет", "ky": "жок"},
    "pins": {"en": "Server certificate pins", "ru": "Закреплённые сертификаты сервера",
             "ky": "Сервердин бекитилген сертификаттары"},
    "next_pin": {"en": "next, announced by the server", "ru": "следующий, объявлен сервером",
                 "ky": "кийинкиси, сервер жарыялаган"},
    "pin_mismatch": {
        "en": "The server shows a certificate this workstation does not know. If the server was "
              "reinstalled, or its certificate was rotated (kalkan-server tls activate) before this "
              "workstation learned the new one, enrol it again: kalkan-agent enroll --force --server URL "
              "--code CODE. Otherwise something sits between them: investigate.",
        "ru": "Сервер показывает сертификат, который этот компьютер не знает. Если сервер переустановили "
              "или сменили его сертификат (kalkan-server tls activate) раньше, чем компьютер узнал новый, "
              "зарегистрируйте его заново: kalkan-agent enroll --force --server URL --code CODE. Иначе "
              "между ними кто-то есть: разберитесь.",
        "ky": "Сервер бул компьютер билбеген сертификатты көрсөтүүдө. Эгер сервер кайра орнотулса же анын "
              "сертификаты (kalkan-server tls activate) компьютер жаңысын билгенге чейин алмаштырылса, аны "
              "кайра каттаңыз: kalkan-agent enroll --force --server URL --code CODE. Антпесе алардын "
              "ортосунда бирөө бар: текшериңиз.",
    },
}

# What `enroll` tells the IT person, in the same language as `status`.
_ENROLL_TEXT: dict[str, dict[str, str]] = {
    "already": {
        "en": "already enrolled as {agent_id} with {server}; add --force to enrol again "
              "(e.g. after the agent was revoked)",
        "ru": "уже зарегистрирован как {agent_id} на {server}; добавьте --force, чтобы "
              "зарегистрироваться заново (например, после отзыва агента)",
        "ky": "{server} серверинде {agent_id} катары катталган; кайра катталуу үчүн --force "
              "кошуңуз (мисалы, агент жокко чыгарылгандан кийин)",
    },
    "no_cert": {
        "en": "cannot fetch the server certificate from {url}: {error}",
        "ru": "не удалось получить сертификат сервера с {url}: {error}",
        "ky": "{url} дарегинен сервердин сертификатын алуу мүмкүн болгон жок: {error}",
    },
    "mismatch": {
        "en": "the server's certificate SHA-256 is {got}, not the {expected} you gave: refusing to "
              "enrol (wrong server, or someone in between)",
        "ru": "SHA-256 сертификата сервера {got}, а не указанный вами {expected}: регистрация "
              "отклонена (не тот сервер или кто-то посередине)",
        "ky": "сервердин сертификатынын SHA-256 мааниси {got}, сиз берген {expected} эмес: "
              "катталуудан баш тартылды (башка сервер же ортодо бирөө бар)",
    },
    "fingerprint": {
        "en": "server certificate SHA-256: {fingerprint}",
        "ru": "SHA-256 сертификата сервера: {fingerprint}",
        "ky": "сервердин сертификатынын SHA-256: {fingerprint}",
    },
    "compare": {
        "en": "  compare it with `kalkan-server fingerprint` on the server; it is now pinned",
        "ru": "  сверьте с выводом `kalkan-server fingerprint` на сервере; теперь он закреплён",
        "ky": "  сервердеги `kalkan-server fingerprint` менен салыштырыңыз; ал эми бекитилди",
    },
    "plain_http": {
        "en": "WARNING: plain http:// — nothing is encrypted or pinned; use only on a test bench",
        "ru": "ВНИМАНИЕ: простой http:// — ничего не шифруется и не закрепляется; только для "
              "тестового стенда",
        "ky": "ЭСКЕРТҮҮ: жөнөкөй http:// — эч нерсе шифрленбейт жана бекитилбейт; сыноо стенди "
              "үчүн гана",
    },
    "not_url": {
        "en": "{server} is not a URL; give it as https://HOST:PORT",
        "ru": "{server} — не адрес; укажите его как https://HOST:PORT",
        "ky": "{server} дарек эмес; аны https://HOST:PORT түрүндө бериңиз",
    },
    "refused": {
        "en": "the server refused the enrolment: {detail}",
        "ru": "сервер отказал в регистрации: {detail}",
        "ky": "сервер каттоодон баш тартты: {detail}",
    },
    "unreachable": {
        "en": "cannot reach {url}: {error}",
        "ru": "не удалось связаться с {url}: {error}",
        "ky": "{url} менен байланышуу мүмкүн болгон жок: {error}",
    },
    "enrolled": {
        "en": "enrolled as {agent_id} (school {school}, room {room}, seat {seat}); state in {state}",
        "ru": "зарегистрирован как {agent_id} (школа {school}, кабинет {room}, место {seat}); "
              "состояние в {state}",
        "ky": "{agent_id} катары катталды (мектеп {school}, бөлмө {room}, орун {seat}); абалы {state} ичинде",
    },
}


def _t(key: str, lang: str) -> str:
    return message(_TEXT, key, lang)


def _fail(message: str, code: int = 2) -> int:
    print(f"kalkan-agent: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- enroll


def cmd_enroll(args: argparse.Namespace) -> int:
    lang = choose_language()

    def say(key: str, **params: object) -> str:
        return message(_ENROLL_TEXT, key, lang, **params)

    state = AgentState(StatePaths.from_option(args.state_dir))
    if state.is_enrolled() and not args.force:
        config = state.load_config()
        return _fail(say("already", agent_id=config.agent_id, server=config.server_url))
    url = args.server.rstrip("/")
    expected = normalise_fingerprint(args.fingerprint) if args.fingerprint else None
    sha256: str | None = None
    pem = ""
    if url.startswith("https://"):
        try:
            pem, sha256 = fetch_certificate(url)
        except (OSError, ValueError) as exc:
            return _fail(say("no_cert", url=url, error=exc))
        if expected is not None and sha256 != expected:
            return _fail(say("mismatch", got=pretty_fingerprint(sha256),
                             expected=pretty_fingerprint(expected)))
        print(say("fingerprint", fingerprint=pretty_fingerprint(sha256)))
        if expected is None:
            print(say("compare"))
    elif url.startswith("http://"):
        print(say("plain_http"), file=sys.stderr)
    else:
        return _fail(say("not_url", server=repr(args.server)))
    client = ServerClient(url, token=None, sha256=sha256)
    try:
        # the server answers a refusal in the person's language when it has the text
        answer = client.enroll(code=args.code, seat=args.seat, language=lang)
    except ServerError as exc:
        return _fail(say("refused", detail=exc.detail))
    except (TransportError, PinMismatch) as exc:
        return _fail(say("unreachable", url=url, error=exc))
    finally:
        client.close()
    config = AgentConfig(
        server_url=url,
        agent_id=answer.agent_id,
        server_sha256=sha256,
        # enrolled during a certificate rotation: the next certificate the server announced
        server_sha256_next=client.pins.next if client.pins is not None else None,
        seat=answer.seat or args.seat,
        room=answer.room,
        school=answer.school,
        enrolled_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    state.write_token(answer.token)  # token first: config present means "enrolled"
    if pem:
        state.write_server_cert(pem)
    state.save_config(config)
    print(say("enrolled", agent_id=answer.agent_id, school=answer.school or "?", room=answer.room or "-",
              seat=config.seat or "-", state=state.paths.root))
    return 0


# ---------------------------------------------------------------------------- run


# Optional packages other Kalkan parts install (mitmproxy needs them) that httpcore would load into
# the long-running agent although the agent never uses them: HTTP/2 (h2, hpack, hyperframe: +1.2 MB
# measured; the server is spoken to over HTTP/1.1).  A module set to None in sys.modules makes its
# import fail the way httpcore expects (it then leaves HTTP/2 out).  Only `run` does this: the
# `agent` package is also imported inside mitmdump, which needs HTTP/2.
UNUSED_IN_AGENT = ("h2",)


def keep_unused_modules_out() -> None:
    for name in UNUSED_IN_AGENT:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]  # already loaded: left alone


def cmd_run(args: argparse.Namespace) -> int:
    keep_unused_modules_out()  # before the first server connection imports httpcore
    state = AgentState(StatePaths.from_option(args.state_dir))
    # `--collectors ""` is none at all (a test's bare agent); no option at all, the configured set
    collectors = ([c.strip() for c in args.collectors.split(",") if c.strip()]
                  if args.collectors is not None else None)
    try:
        runtime = AgentRuntime(state, collectors=collectors, platform=args.platform,
                               heartbeat_s=args.heartbeat, status_interval_s=args.status_interval)
    except (ValueError, NotEnrolled) as exc:
        return _fail(str(exc))
    runtime.run()
    return 0


# ---------------------------------------------------------------------------- upgrade


def cmd_upgrade(args: argparse.Namespace) -> int:
    from agent.upgrade import run_upgrade

    state = AgentState(StatePaths.from_option(args.state_dir))
    result = run_upgrade(state.paths.root, version=args.version, rollout=args.rollout)
    print(json.dumps(result))
    return 0 if result["state"] == "upgraded" else 1


# ---------------------------------------------------------------------------- status


def gather_status(state: AgentState, *, check_server: bool = True) -> dict[str, Any]:
    """Everything `status` shows, as a dict (also the --json output)."""
    report: dict[str, Any] = {"state_dir": str(state.paths.root), "enrolled": state.is_enrolled()}
    config = None
    if report["enrolled"]:
        try:
            config = state.load_config()
        except (ValueError, NotEnrolled) as exc:
            report["config_error"] = str(exc)
    if config is not None:
        report.update(agent_id=config.agent_id, server_url=config.server_url, seat=config.seat,
                      room=config.room, server_sha256=config.server_sha256,
                      server_sha256_next=config.server_sha256_next)
    report["server_reachable"] = None
    if config is not None and check_server:
        try:
            client = ServerClient(config.server_url, token=state.read_token(), sha256=config.pin_set())
            try:
                report["server_reachable"] = client.healthz()
            finally:
                client.close()
        except (TransportError, OSError, ValueError, NotEnrolled) as exc:
            report["server_reachable"] = False
            report["server_error"] = str(exc)
            if isinstance(exc.__cause__, PinMismatch):
                report["server_error_code"] = "pin_mismatch"
    bundle = state.load_policy()
    report["policy_version"] = bundle.version if bundle else None
    if state.paths.outbox.exists():
        with Outbox(state.paths.outbox) as outbox:
            report["outbox_depth"] = outbox.depth()
            report["dropped"] = outbox.drop_totals()
            report["rejected"] = [r.__dict__ for r in outbox.rejected(limit=5)]
            report["rejected_count"] = outbox.rejected_count()
    else:
        report.update(outbox_depth=0, dropped={}, rejected=[], rejected_count=0)
    status = state.read_status()
    fresh = bool(status) and time.time() - status.get("updated_at", 0) < STATUS_FRESH_S
    running = bool(status and status.get("running") and fresh)
    report["running"] = running
    report["collectors"] = status.get("collectors", {}) if running and status else {}
    if running and status:
        report["uplink"] = status.get("uplink")
    return report


def _yes_no(value: bool | None, lang: str) -> str:
    return _t("unknown", lang) if value is None else _t("yes" if value else "no", lang)


def format_status(report: dict[str, Any], lang: str) -> str:
    lines = [f"{_t('title', lang)} {agent_version()}  ({report['state_dir']})"]

    def row(key: str, value: Any) -> None:
        lines.append(f"  {_t(key, lang) + ':':<34} {value}")

    row("enrolled", _yes_no(report["enrolled"], lang))
    if report.get("agent_id"):
        row("agent_id", report["agent_id"])
        row("server", report["server_url"])
    if "config_error" in report:
        lines.append(f"  ! {report['config_error']}")
    if report.get("server_sha256"):
        row("pins", pretty_fingerprint(report["server_sha256"]))
        if report.get("server_sha256_next"):
            lines.append(f"  {'':<34} {pretty_fingerprint(report['server_sha256_next'])} "
                         f"({_t('next_pin', lang)})")
    row("reachable", _yes_no(report["server_reachable"], lang)
        + (f"  ({report['server_error']})" if report.get("server_error") else ""))
    if report.get("server_error_code") == "pin_mismatch":
        lines.append(f"  ! {_t('pin_mismatch', lang)}")
    row("running", _yes_no(report["running"], lang))
    row("policy", report["policy_version"] if report["policy_version"] is not None else _t("none", lang))
    row("outbox", report["outbox_depth"])
    dropped = report.get("dropped") or {}
    row("dropped", ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) if dropped else 0)
    row("rejected", report.get("rejected_count", 0))
    for rejected in report.get("rejected", []):
        lines.append(f"      {rejected['type']} {rejected['id']}: {rejected['error']}")
    lines.append(f"  {_t('collectors', lang)}:")
    if not report["collectors"]:
        lines.append(f"      {_t('unknown', lang)}")
    for name, health in sorted(report["collectors"].items()):
        detail = f" — {health.get('detail')}" if health.get("detail") else ""
        lines.append(f"      {name:<12} {health.get('state')}{detail}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    state = AgentState(StatePaths.from_option(args.state_dir))
    report = gather_status(state, check_server=not args.no_server)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(format_status(report, choose_language()))
    return 0 if report["enrolled"] and report["running"] else 1


# ---------------------------------------------------------------------------- uninstall


def cmd_uninstall(args: argparse.Namespace) -> int:
    root = StatePaths.from_option(args.state_dir).root
    problems = 0
    for name in COLLECTORS:
        try:
            cls = load_collector_class(name)
        except Exception as exc:
            print(f"  {name}: not installed ({exc.__class__.__name__}), nothing to undo")
            continue
        undo = getattr(cls, "uninstall", None)
        if undo is None:
            continue
        try:
            undo(root)
            print(f"  {name}: uninstalled")
        except Exception as exc:
            problems += 1
            print(f"  {name}: uninstall FAILED: {exc}", file=sys.stderr)
    if args.purge and root.exists():
        shutil.rmtree(root)
        print(f"removed {root}")
    return 1 if problems else 0


# ---------------------------------------------------------------------------- parser


def build_parser(*, with_extras: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kalkan-agent", description="Kalkan workstation agent")
    parser.add_argument("--version", action="version", version=f"kalkan-agent {agent_version()}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="json: one JSON object a line (for journald, Loki, Elasticsearch)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_state_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--state-dir", type=Path, default=None,
                       help="state directory (default $KALKAN_AGENT_STATE or /var/lib/kalkan-agent)")
        return p

    enroll = with_state_dir(sub.add_parser("enroll", help="enrol this workstation with a server"))
    enroll.add_argument("--server", required=True, help="server URL, e.g. https://10.0.0.2:8443")
    enroll.add_argument("--code", required=True, help="enrolment code from `kalkan-server enrollment-code`")
    enroll.add_argument("--seat", help="seat name of this workstation in the room, e.g. lab1-05")
    enroll.add_argument("--fingerprint", help="expected server certificate SHA-256 (refuse any other)")
    enroll.add_argument("--force", action="store_true", help="enrol again even if already enrolled")
    enroll.set_defaults(func=cmd_enroll)

    run = with_state_dir(sub.add_parser("run", help="run the agent until SIGTERM"))
    run.add_argument("--collectors", help=f"comma-separated subset of: {', '.join(COLLECTORS)} "
                                          "(empty: none)")
    run.add_argument("--platform", choices=PLATFORMS, default="linux")
    run.add_argument("--heartbeat", type=float, default=None, help="heartbeat interval in seconds")
    run.add_argument("--status-interval", type=float, default=5.0, help="seconds between status.json writes")
    run.set_defaults(func=cmd_run)

    status = with_state_dir(sub.add_parser("status", help="enrolment, server, policy, outbox, collectors"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--no-server", action="store_true", help="do not contact the server")
    status.set_defaults(func=cmd_status)

    uninstall = with_state_dir(sub.add_parser("uninstall", help="undo what the collectors installed"))
    uninstall.add_argument("--purge", action="store_true", help="also delete the state directory")
    uninstall.set_defaults(func=cmd_uninstall)

    upgrade = with_state_dir(sub.add_parser(
        "upgrade", help="install another agent version from the server (run by the agent when the console "
                        "orders it); rolls back on failure"))
    upgrade.add_argument("--version", required=True, help="the package version, as the server offers it")
    upgrade.add_argument("--rollout", type=int, required=True, help="the console's rollout number")
    upgrade.set_defaults(func=cmd_upgrade)

    for module_name in SUBCOMMAND_MODULES if with_extras else ():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that domain has no CLI (yet)
            print(f"kalkan-agent: {module_name} cannot be loaded ({exc}); its commands are missing",
                  file=sys.stderr)
            continue
        except Exception as exc:
            print(f"kalkan-agent: {module_name} cannot be loaded ({exc}); its commands are missing",
                  file=sys.stderr)
            continue
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The long-running `run` skips the domain subcommands: importing them costs memory (~3 MB).
    parser = build_parser(with_extras="run" not in argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_format == "json":  # docs/operations.md "Logs"
        from agent.metrics import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
