"""`kalkan-agent integrity baseline|check`: the integrity work from the command line.

    kalkan-agent integrity baseline            # hash the program folders, make the baseline
    kalkan-agent integrity check               # fast check (metadata), report changes
    kalkan-agent integrity check --full        # re-read every file

The folders come from the agent's last policy (`policy.json` in the state folder),
or `--paths`.  Findings go to the agent's outbox (so the server sees them) unless
`--no-report`.  Exit status of `check`: 0 nothing waiting, 1 changes waiting for
acceptance, 2 no baseline or a tampered one, 3 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.i18n import choose_language, message
from agent.integrity.config import IntegrityConfig, IntegrityConfigError
from agent.integrity.engine import IntegrityEngine
from agent.integrity.store import BaselineMissing, BaselineTampered
from policy_server.protocol import IntegritySection, PolicyBundle

_TEXT: dict[str, dict[str, str]] = {
    "hashing": {"en": "Hashing", "ru": "Хеширование", "ky": "Хештөө"},
    "baseline_done": {
        "en": "Baseline version {seq}: {files} files, digest {digest}",
        "ru": "Эталон, версия {seq}: файлов {files}, дайджест {digest}",
        "ky": "Эталон, {seq}-версия: {files} файл, дайджест {digest}",
    },
    "check_done": {
        "en": "{kind} check: {files} files, {hashed} re-read, {secs:.2f} s",
        "ru": "{kind} проверка: файлов {files}, перечитано {hashed}, {secs:.2f} с",
        "ky": "{kind} текшерүү: {files} файл, {hashed} кайра окулду, {secs:.2f} с",
    },
    "full": {"en": "Full", "ru": "Полная", "ky": "Толук"},
    "fast": {"en": "Fast", "ru": "Быстрая", "ky": "Тез"},
    "no_changes": {"en": "No changes.", "ru": "Изменений нет.", "ky": "Өзгөрүү жок."},
    "changes": {
        "en": "{n} change(s) waiting for the responsible person's decision:",
        "ru": "Изменений, ждущих решения ответственного: {n}",
        "ky": "Жооптуу адамдын чечимин күткөн өзгөрүүлөр: {n}",
    },
    "added": {"en": "added", "ru": "добавлен", "ky": "кошулду"},
    "modified": {"en": "modified", "ru": "изменён", "ky": "өзгөртүлдү"},
    "removed": {"en": "removed", "ru": "удалён", "ky": "өчүрүлдү"},
    "permissions": {"en": "permissions", "ru": "права", "ky": "укуктар"},
    "by_pm": {
        "en": "package manager ({package})",
        "ru": "пакетный менеджер ({package})",
        "ky": "пакет менеджери ({package})",
    },
    "not_pm": {"en": "NOT the package manager", "ru": "НЕ пакетный менеджер", "ky": "пакет менеджери ЭМЕС"},
    "mtime_restored": {
        "en": "modification time was set back",
        "ru": "время изменения подделано",
        "ky": "өзгөртүү убактысы артка коюлган",
    },
    "missing": {
        "en": "There is no baseline yet. Make one with: kalkan-agent integrity baseline",
        "ru": "Эталона ещё нет. Создайте его: kalkan-agent integrity baseline",
        "ky": "Эталон али жок. Аны түзүңүз: kalkan-agent integrity baseline",
    },
    "tampered": {
        "en": "The baseline was tampered with: {detail}. This is reported to the server. Check the "
        "computer, then make a new baseline with: kalkan-agent integrity baseline",
        "ru": "Эталон подделан: {detail}. Об этом сообщено на сервер. Проверьте компьютер, затем "
        "создайте новый эталон: kalkan-agent integrity baseline",
        "ky": "Эталон бурмаланган: {detail}. Бул серверге билдирилди. Компьютерди текшериңиз, андан "
        "кийин жаңы эталон түзүңүз: kalkan-agent integrity baseline",
    },
    "bad_policy": {
        "en": "The integrity settings are wrong: {detail}",
        "ru": "Настройки целостности неверны: {detail}",
        "ky": "Бүтүндүк жөндөөлөрү туура эмес: {detail}",
    },
}


def _t(lang: str, key: str, **params: Any) -> str:
    return message(_TEXT, key, lang, **params)


class ProgressBar:
    """A one-line bar on stderr: [#####-----]  48%  29102/60000  1.40 GB  820 MB/s."""

    def __init__(self, label: str, stream=None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.total_files = self.total_bytes = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._tty = self.stream.isatty()

    def total(self, files: int, nbytes: int) -> None:
        self.total_files, self.total_bytes = files, nbytes  # hashing began with the walk: keep `started`

    def __call__(self, files: int, nbytes: int) -> None:
        now = time.monotonic()
        done = files >= self.total_files
        if not done and now - self._last_draw < (0.1 if self._tty else 5.0):
            return
        self._last_draw = now
        # A full scan learns sizes only while hashing (no lstat in its walk): then count files.
        if self.total_bytes:
            frac, amount = nbytes / self.total_bytes, f"{nbytes / 1e9:.2f}/{self.total_bytes / 1e9:.2f} GB"
        else:
            frac, amount = (files / self.total_files if self.total_files else 1.0), f"{nbytes / 1e9:.2f} GB"
        filled = int(min(frac, 1.0) * self.width)
        rate = nbytes / max(now - self.started, 1e-6) / 1e6
        line = (
            f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {frac * 100:5.1f}%  "
            f"{files}/{self.total_files}  {amount}  {rate:.0f} MB/s"
        )
        self.stream.write(("\r" + line if self._tty else line + "\n") + ("\n" if done and self._tty else ""))
        self.stream.flush()


class _PrintSink:
    """Where events go when there is no outbox: nowhere but the JSON output."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def emit(self, event_type: str, data: Any, clauses: list[str] | None) -> None:
        self.events.append((event_type, data))


def _state_dirs(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(agent state folder, integrity folder, key folder)."""
    from agent.state import StatePaths

    paths = StatePaths.from_option(args.state_dir)
    integrity = paths.root / "collectors" / "integrity"
    if args.key_dir:
        key_dir = Path(args.key_dir)
    elif os.geteuid() == 0 and args.state_dir is None:
        from agent.collectors.integrity import SYSTEM_KEY_DIR

        key_dir = SYSTEM_KEY_DIR
    else:
        key_dir = paths.root / "integrity-key"
    return paths.root, integrity, key_dir


def _config(args: argparse.Namespace, state_root: Path) -> IntegrityConfig:
    policy_file = Path(args.policy) if args.policy else state_root / "policy.json"
    section = IntegritySection()
    if policy_file.is_file():
        section = PolicyBundle.model_validate_json(policy_file.read_text()).integrity
    elif args.policy:
        raise IntegrityConfigError(f"the policy file {policy_file} does not exist")
    updates = {}
    if args.paths:
        updates["paths"] = args.paths
    if args.exclude:
        updates["exclude"] = args.exclude
    return IntegrityConfig.from_section(section.model_copy(update=updates))


def _emitter(args: argparse.Namespace, state_root: Path):
    """The outbox of the agent if reporting, else a list; returns (emit, close)."""
    sink = _PrintSink()
    if args.no_report:
        return sink.emit, sink, lambda: None
    from agent.outbox import Outbox, OutboxSink

    outbox = Outbox(state_root / "outbox.sqlite")
    outbox_sink = OutboxSink(outbox)

    def emit(event_type: str, data: Any, clauses: list[str] | None) -> None:
        sink.emit(event_type, data, clauses)
        outbox_sink.emit(event_type, data, clauses=clauses)

    return emit, sink, outbox.close


def _run(args: argparse.Namespace) -> int:
    lang = choose_language(args.lang)
    state_root, integrity_dir, key_dir = _state_dirs(args)
    try:
        config = _config(args, state_root)
    except (IntegrityConfigError, ValueError) as exc:
        print(_t(lang, "bad_policy", detail=exc), file=sys.stderr)
        return 3
    emit, sink, close = _emitter(args, state_root)
    engine = IntegrityEngine(
        config, state_dir=integrity_dir, key_dir=key_dir, emit=emit, workers=args.workers
    )
    bar = None if args.quiet else ProgressBar(_t(lang, "hashing"))
    try:
        if args.command_integrity == "baseline":
            baseline = engine.build_baseline(
                reason="rebuilt" if engine.store.exists() else "created",
                progress=bar,
                on_total=bar.total if bar else None,
            )
            print(
                _t(lang, "baseline_done", seq=baseline.seq, files=len(baseline.keys), digest=baseline.digest)
            )
            return 0
        try:
            result = engine.check(full=args.full, progress=bar, on_total=bar.total if bar else None)
        except BaselineMissing:
            print(_t(lang, "missing"), file=sys.stderr)
            return 2
        except BaselineTampered as exc:
            print(_t(lang, "tampered", detail=exc), file=sys.stderr)
            return 2
        if args.json:
            for event_type, data in sink.events:
                print(json.dumps({"type": event_type, "data": data.model_dump(mode="json")}))
        print(
            _t(
                lang,
                "check_done",
                kind=_t(lang, "full" if args.full else "fast"),
                files=result.files,
                hashed=result.hashed_files,
                secs=result.duration_s,
            ),
            file=sys.stderr if args.json else sys.stdout,
        )
        waiting = [
            c
            for c in result.changes
            if not result.explained[c.path].by_package_manager or not config.auto_accept_package_updates
        ]
        out = sys.stderr if args.json else sys.stdout
        if not result.changes:
            print(_t(lang, "no_changes"), file=out)
        else:
            print(_t(lang, "changes", n=len(waiting)), file=out)
            for change in result.changes:
                how = result.explained[change.path]
                who = _t(lang, "by_pm", package=how.package) if how.by_package_manager else _t(lang, "not_pm")
                extra = f"; {_t(lang, 'mtime_restored')}" if change.mtime_restored else ""
                print(f"  {_t(lang, change.change):12} {change.path}  [{who}{extra}]", file=out)
        return 1 if waiting else 0
    finally:
        close()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `integrity baseline|check` to the `kalkan-agent` command line."""
    integrity = subparsers.add_parser("integrity", help="software integrity: baseline and checks (000 §4.2)")
    sub = integrity.add_subparsers(dest="command_integrity", required=True)
    for name, help_text in (
        ("baseline", "hash the program folders and make them the baseline"),
        ("check", "compare the program folders with the baseline and report changes"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="agent state folder (default $KALKAN_AGENT_STATE or /var/lib/kalkan-agent)",
        )
        p.add_argument(
            "--key-dir",
            type=Path,
            default=None,
            help="where the baseline's key and anchor live (default /etc/kalkan/integrity as root)",
        )
        p.add_argument("--policy", help="policy bundle JSON to take the folders from (default: the agent's)")
        p.add_argument("--paths", nargs="+", help="folders to watch instead of the policy's")
        p.add_argument("--exclude", nargs="+", help="patterns to leave out, e.g. '*.pyc'")
        p.add_argument("--workers", type=int, default=None, help="hashing processes (default: all cores)")
        p.add_argument("--no-report", action="store_true", help="do not put events in the agent's outbox")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--lang", choices=("ky", "ru", "en"), help="language of the messages (default: LANG)")
        if name == "check":
            p.add_argument(
                "--full", action="store_true", help="re-read every file (slow, catches everything)"
            )
            p.add_argument("--json", action="store_true", help="print the events as JSON lines")
        p.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kalkan-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
