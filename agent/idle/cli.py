"""`kalkan-agent session-helper`: the per-user idle-locking helper (see agent.idle.helper)
and `kalkan-agent isuo-notify USER start|end` for scripts and the proxy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.idle.helper import build_parser, run_from_args
from agent.idle.wire import DEFAULT_SOCKET, WireError, notify_isuo


def _notify(args: argparse.Namespace) -> int:
    try:
        notify_isuo(args.user, args.state, socket_path=args.socket)
    except (WireError, ValueError) as exc:
        print(f"kalkan-agent isuo-notify: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    helper = subparsers.add_parser("session-helper", help="lock this desktop session when it is idle")
    build_parser(helper)
    helper.set_defaults(func=run_from_args)
    notify = subparsers.add_parser("isuo-notify", help="tell the agent an ISUO session started/ended")
    notify.add_argument("user", help="OS user name")
    notify.add_argument("state", choices=["start", "end"])
    notify.add_argument("--socket", type=Path, default=DEFAULT_SOCKET)
    notify.set_defaults(func=_notify)
