"""`kalkan-server lists update|show` (called from policy_server/cli.py)."""

from __future__ import annotations

import json
import sys

from policy_server.filtering import lists


def run(args, settings, session_factory) -> int:
    with session_factory(settings) as db:
        if args.action == "show":
            state = lists.list_state(db)
            rows = lists.artifacts(db)
            current = lists.current_artifact(db)
            out = {
                "source": state.source if state else None,
                "checked_at": state.checked_at.isoformat() if state and state.checked_at else None,
                "last_error": state.last_error if state else None,
                "current": current.sha256 if current else None,
                "published": [{"sha256": r.sha256, "entries": r.entries, "size": r.size,
                               "created_at": r.created_at.isoformat(), "changes": r.changes} for r in rows],
            }
            if args.json:
                print(json.dumps(out))
                return 0
            print(f"source: {out['source'] or '(none yet: lists update --source URL)'}")
            print(f"last check: {out['checked_at'] or '-'}  error: {out['last_error'] or '-'}")
            for r in rows:
                mark = "*" if current and r.sha256 == current.sha256 else " "
                print(f"{mark} {r.sha256[:16]}  {r.created_at:%Y-%m-%d %H:%M}  {r.entries:,} entries  "
                      f"{r.size:,} bytes")
            return 0
        try:
            result = lists.update_lists(db, state_dir=settings.state_dir, actor="cli", source=args.source,
                                        sha256=args.sha256, force=args.force)
            db.commit()
        except lists.ListError as exc:
            db.rollback()
            lists.record_failure(db, str(exc))
            db.commit()
            print(f"kalkan-server lists update: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result.__dict__))
        return 0
    if result.status == "published":
        print(f"published {result.sha256} ({result.entries:,} entries, {result.size:,} bytes, "
              f"{result.seconds} s) as policy version {result.policy_version}")
        for cat, (added, removed) in sorted(result.changes.items()):
            print(f"  {cat}: +{added} -{removed}")
    elif result.status == "unchanged":
        print(f"the lists have not changed; {result.sha256} stays in force")
    else:
        print("the publisher says the lists have not changed (304); nothing to do")
    return 0
