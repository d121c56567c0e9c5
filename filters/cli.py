"""`kalkan-filter`: canonicalise URLs, compile and describe category indexes, check URLs
against a policy.

    kalkan-filter canonicalize [URL…]              one canonical URL a line (stdin if none)
    kalkan-filter compile -o OUT [--ut1 DIR] [--list CAT[,CAT]=FILE …] [--format F]
    kalkan-filter info INDEX [--verify] [--json]
    kalkan-filter check [--index F] [--policy P] [--group G] [--at TIME] [--room R]
                        [--seat S] [--user U] [--lang L] [--json] [URL…]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from .canonical import canonicalize
from .categories import CATEGORIES
from .decision import decide
from .index import CategoryIndex, IndexError_, Source, compile_index, index_for_policy
from .messages import explain
from .policy import FilterPolicy, PolicyError


def _inputs(values: list[str]) -> Iterator[str]:
    if values:
        yield from values
        return
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield line


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        frac = min(1.0, done / total) if total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac:6.1%} {done:,}/{total:,} lines")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def cmd_canonicalize(args) -> int:
    for url in _inputs(args.urls):
        print(canonicalize(url))
    return 0


def _parse_list_arg(value: str) -> tuple[tuple[str, ...], str]:
    if "=" not in value:
        raise SystemExit(f"--list {value!r}: write CATEGORY=FILE, e.g. --list games=my-games.txt "
                         f"(categories: {', '.join(sorted(CATEGORIES))})")
    cats, path = value.split("=", 1)
    ids = tuple(c.strip() for c in cats.split(",") if c.strip())
    for c in ids:
        if c not in CATEGORIES:
            known = ", ".join(sorted(CATEGORIES))
            raise SystemExit(f"--list {value!r}: unknown category {c!r}; known: {known}")
    return ids, path


def cmd_compile(args) -> int:
    sources: list[Source] = []
    for d in args.ut1 or []:
        if not Path(d).is_dir():
            print(f"kalkan-filter compile: --ut1 {d} is not a directory", file=sys.stderr)
            return 2
        sources.append(Source(d, "ut1"))
    for value in args.list or []:
        ids, path = _parse_list_arg(value)
        if not Path(path).is_file():
            print(f"kalkan-filter compile: list file {path} does not exist", file=sys.stderr)
            return 2
        sources.append(Source(path, args.format, ids))
    if not sources:
        print("kalkan-filter compile: nothing to compile; give --ut1 DIR and/or --list CATEGORY=FILE",
              file=sys.stderr)
        return 2
    problems = 0

    def on_problem(p) -> None:
        nonlocal problems
        problems += 1
        if problems <= args.max_problems:
            print(f"\n{p}" if progress.enabled else str(p), file=sys.stderr)

    progress = _Progress(args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty()))
    stats = compile_index(sources, args.output, on_problem=on_problem, on_progress=progress)
    if problems > args.max_problems:
        print(f"… and {problems - args.max_problems} more bad lines (all skipped)", file=sys.stderr)
    print(f"wrote {args.output}: {stats.keys:,} keys from {stats.entries:,} entries, "
          f"{stats.problems} bad lines skipped, {stats.bytes:,} bytes, {stats.seconds} s, "
          f"sha256 {stats.sha256}")
    if stats.skipped_ut1:
        print(f"UT1 folders without a Kalkan category (not imported): {', '.join(stats.skipped_ut1)}")
    return 0


def cmd_info(args) -> int:
    try:
        index = CategoryIndex.open(args.index, verify=args.verify)
    except IndexError_ as exc:
        print(f"kalkan-filter info: {exc}", file=sys.stderr)
        return 1
    info = index.info()
    if args.verify:
        info["verified"] = True
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        for key, value in info.items():
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            print(f"{key:>16}: {value}")
    return 0


def _parse_at(text: str | None) -> datetime:
    if not text:
        return datetime.now().astimezone()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"--at {text!r}: write a date and time like 2025-03-03T10:15 (school time) "
                         "or 2025-03-03T10:15+06:00") from None


def cmd_check(args) -> int:
    try:
        bundle = json.loads(Path(args.policy).read_text("utf-8")) if args.policy else {}
        policy = FilterPolicy.from_bundle(bundle)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"kalkan-filter check: cannot read policy {args.policy}: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"kalkan-filter check: policy {args.policy}: {exc}", file=sys.stderr)
        return 2
    try:
        base = CategoryIndex.open(args.index) if args.index else CategoryIndex.empty()
        index = index_for_policy(base, policy.site_categories)
    except (IndexError_, ValueError) as exc:
        print(f"kalkan-filter check: {exc}", file=sys.stderr)
        return 2
    at = _parse_at(args.at)
    group = args.group or (policy.group_of(args.user) if args.user else policy.default_group)
    blocked_any = False
    for url in _inputs(args.urls):
        v = decide(policy, index, url=url, group=group, at=at, room=args.room, seat=args.seat,
                   os_user=args.user)
        blocked_any |= v.blocked
        if args.json:
            print(json.dumps(v.to_json(), ensure_ascii=False), flush=True)
        else:
            cats = ",".join(v.categories) or "-"
            print(f"{v.action.upper():5} {v.url}  rule={v.rule} categories={cats} "
                  f"clauses={'; '.join(v.clauses)}  {explain(v, args.lang)}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kalkan-filter", description="Kalkan content filter tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("canonicalize", help="print canonical URLs (stdin when no argument)")
    p.add_argument("urls", nargs="*")
    p.set_defaults(func=cmd_canonicalize)

    p = sub.add_parser("compile", help="build a category index file")
    p.add_argument("-o", "--output", required=True, help="index file to write (e.g. ut1.kidx)")
    p.add_argument("--ut1", action="append", metavar="DIR", help="a UT1 tree (adult/, games/, …)")
    p.add_argument("--list", action="append", metavar="CATEGORY=FILE",
                   help="a list file and its Kalkan categories (comma-separated)")
    p.add_argument("--format", default="auto", choices=["auto", "plain", "hosts", "adguard"],
                   help="format of --list files (default: guess)")
    p.add_argument("--progress", default="auto", choices=["auto", "always", "never"])
    p.add_argument("--max-problems", type=int, default=50, help="bad lines to print (all are counted)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("info", help="describe an index file")
    p.add_argument("index")
    p.add_argument("--verify", action="store_true", help="also check the content hash")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="decide URLs (stdin when no argument)")
    p.add_argument("urls", nargs="*")
    p.add_argument("--index", help="compiled index file")
    p.add_argument("--policy", help="policy bundle JSON (the agent's policy.json)")
    p.add_argument("--group", help="group to decide for (default: the user's group or the default group)")
    p.add_argument("--at", help="time, ISO 8601 (default: now)")
    p.add_argument("--room")
    p.add_argument("--seat")
    p.add_argument("--user", help="OS user name")
    p.add_argument("--lang", default="en", choices=["ky", "ru", "en"])
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        return 0
    except (FileNotFoundError, ValueError) as exc:
        print(f"kalkan-filter {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
