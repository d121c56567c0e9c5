"""`kalkan-agent av ...`: the antivirus commands for the school's IT person.

    kalkan-agent av status                 clamd, signatures, last full scan, quarantine
    kalkan-agent av scan-now [PATH ...]    full scan now (no PATH), or scan these files/folders
    kalkan-agent av quarantine list        what is in quarantine
    kalkan-agent av restore ID [--to P]    put a quarantined file back (a false positive)

Scans started here write their events to the agent's outbox like the running
agent does, so a manual full scan is also proof for 000 §5.4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from agent.antivirus.checkpoint import Checkpoint, load_last_completed
from agent.antivirus.clamd import DEFAULT_SOCKET, ClamdClient, ClamdError
from agent.antivirus.health import assess
from agent.antivirus.quarantine import Quarantine, QuarantineError
from agent.antivirus.service import AntivirusService
from agent.i18n import choose_language, message
from agent.state import StatePaths
from policy_server.protocol import AvScanKind, PolicyBundle, make_event

TEXT: dict[str, dict[str, str]] = {
    "clamd": {"en": "Antivirus (clamd)", "ru": "Антивирус (clamd)", "ky": "Антивирус (clamd)"},
    "ok": {"en": "works", "ru": "работает", "ky": "иштейт"},
    "problem": {"en": "PROBLEM", "ru": "ПРОБЛЕМА", "ky": "КӨЙГӨЙ"},
    "signatures": {"en": "Signatures", "ru": "Сигнатуры", "ky": "Сигнатуралар"},
    "days_old": {"en": "days old", "ru": "дн. назад", "ky": "күн мурун"},
    "last_scan": {"en": "Last full scan", "ru": "Последняя полная проверка", "ky": "Акыркы толук текшерүү"},
    "never": {"en": "never", "ru": "никогда", "ky": "эч качан"},
    "running": {"en": "Full scan in progress", "ru": "Идёт полная проверка", "ky": "Толук текшерүү жүрүүдө"},
    "quarantine": {"en": "Files in quarantine", "ru": "Файлов в карантине", "ky": "Карантиндеги файлдар"},
    "empty": {"en": "Quarantine is empty.", "ru": "Карантин пуст.", "ky": "Карантин бош."},
    "restored": {"en": "Restored to", "ru": "Восстановлен в", "ky": "Калыбына келтирилди:"},
    "threats": {"en": "threats", "ru": "угроз", "ky": "коркунуч"},
    "files": {"en": "files", "ru": "файлов", "ky": "файл"},
    "clamd_missing": {
        "en": "clamd is not installed or not running",
        "ru": "clamd не установлен или не запущен",
        "ky": "clamd орнотулган эмес же иштебей турат",
    },
    "clamd_unreachable": {
        "en": "clamd does not answer",
        "ru": "clamd не отвечает",
        "ky": "clamd жооп бербейт",
    },
    "signatures_stale": {
        "en": "signatures are out of date",
        "ru": "сигнатуры устарели",
        "ky": "сигнатуралар эскирген",
    },
    "signatures_unknown": {
        "en": "no signature database loaded",
        "ru": "база сигнатур не загружена",
        "ky": "сигнатуралар базасы жүктөлгөн эмес",
    },
}


def t(key: str) -> str:
    """`key` in the language of LC_ALL/LC_MESSAGES/LANG (read each time: tests change it)."""
    return message(TEXT, key, choose_language())


def _folder(args: argparse.Namespace) -> Path:
    return StatePaths.from_option(args.state_dir).collector_dir("antivirus")


def _policy(args: argparse.Namespace) -> PolicyBundle:
    path = StatePaths.from_option(args.state_dir).policy
    try:
        return PolicyBundle.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError):
        return PolicyBundle()


def _client(args: argparse.Namespace) -> ClamdClient:
    return ClamdClient(args.socket or os.environ.get("KALKAN_CLAMD_SOCKET") or DEFAULT_SOCKET)


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        version = client.version()
    except ClamdError:
        version = None
    health = assess(
        version,
        now=datetime.now(UTC),
        max_age_days=_policy(args).antivirus.signature_max_age_days,
        socket_exists=client.socket_path.exists(),
    )
    folder = _folder(args)
    last = load_last_completed(folder)
    checkpoint = Checkpoint.load(folder)
    quarantined = len(Quarantine(folder / "quarantine").list())
    if args.json:
        print(
            json.dumps(
                {
                    "health": health.model_dump(mode="json"),
                    "last_full_scan": last,
                    "checkpoint": checkpoint.__dict__ if checkpoint else None,
                    "quarantined": quarantined,
                },
                indent=1,
            )
        )
        return 0 if not health.problem else 2
    state = t("ok") if not health.problem else f"{t('problem')}: {t(health.problem)}"
    print(f"{t('clamd')}: {state}")
    if health.signature_version:
        print(f"{t('signatures')}: {health.signature_version} ({health.signature_age_days} {t('days_old')})")
    if last:
        print(
            f"{t('last_scan')}: {last['completed_at'][:16]}, {last['files']} {t('files')}, "
            f"{last['threats']} {t('threats')}"
        )
    else:
        print(f"{t('last_scan')}: {t('never')}")
    if checkpoint:
        print(f"{t('running')}: {checkpoint.files} {t('files')}")
    print(f"{t('quarantine')}: {quarantined}")
    return 0 if not health.problem else 2


def _outbox_emitter(args: argparse.Namespace):
    """Events of a manual scan go to the agent's outbox (if the agent is installed here)."""
    paths = StatePaths.from_option(args.state_dir)
    try:
        from agent.outbox import Outbox

        outbox = Outbox(paths.outbox)
    except Exception:  # noqa: BLE001 - no outbox (not installed): print only
        outbox = None

    def emit(event_type: str, data) -> None:
        if outbox is not None:
            outbox.add(make_event(event_type, data))
        if event_type in ("av.threat", "av.scan.completed"):
            print(f"{event_type}: {json.dumps(data.model_dump(mode='json'), ensure_ascii=False)}")

    return emit


def cmd_scan_now(args: argparse.Namespace) -> int:
    service = AntivirusService(_client(args), _folder(args), _outbox_emitter(args))
    try:
        if args.paths:
            missing = [p for p in args.paths if not os.path.exists(p)]
            if missing:
                print(f"kalkan-agent av scan-now: {', '.join(missing)} does not exist", file=sys.stderr)
                return 1
            totals = service.scan_paths([os.path.abspath(p) for p in args.paths], AvScanKind.media)
            return 3 if totals.threats else 0
        completed = service.full_scan(_policy(args).antivirus)
        return 3 if completed and completed.threats else 0
    except ClamdError as exc:
        print(f"kalkan-agent av scan-now: {exc}", file=sys.stderr)
        return 1


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    entries = Quarantine(_folder(args) / "quarantine").list()
    if not entries:
        print(t("empty"))
    for entry in entries:
        print(
            f"{entry.id}  {entry.quarantined_at}  {entry.signature}  {entry.original_path}  ({entry.size} B)"
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        target = Quarantine(_folder(args) / "quarantine").restore(
            args.id, to=args.to, by=os.environ.get("SUDO_USER") or os.environ.get("USER", "")
        )
    except QuarantineError as exc:
        print(f"kalkan-agent av restore: {exc}", file=sys.stderr)
        return 1
    print(f"{t('restored')} {target}")
    return 0


def register(subparsers) -> None:
    av = subparsers.add_parser("av", help="antivirus: status, scan now, quarantine")
    av_sub = av.add_subparsers(dest="av_command", required=True)

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="state directory (default $KALKAN_AGENT_STATE or /var/lib/kalkan-agent)",
        )
        parser.add_argument(
            "--socket", type=Path, default=None, help=f"clamd socket (default {DEFAULT_SOCKET})"
        )
        return parser

    status = common(av_sub.add_parser("status", help="clamd, signatures, last full scan, quarantine"))
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    scan = common(av_sub.add_parser("scan-now", help="full scan now, or scan the given files/folders"))
    scan.add_argument("paths", nargs="*")
    scan.set_defaults(func=cmd_scan_now)
    quarantine = av_sub.add_parser("quarantine", help="quarantined files")
    q_sub = quarantine.add_subparsers(dest="q_command", required=True)
    q_list = common(q_sub.add_parser("list", help="list quarantined files"))
    q_list.set_defaults(func=cmd_quarantine_list)
    restore = common(av_sub.add_parser("restore", help="restore a quarantined file (a false positive)"))
    restore.add_argument("id", help="id from 'av quarantine list'")
    restore.add_argument("--to", type=Path, default=None, help="restore to this path instead of the original")
    restore.set_defaults(func=cmd_restore)
