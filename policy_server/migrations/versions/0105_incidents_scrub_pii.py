"""Incidents stored before the rules stopped writing personal data: titles, params and dedup
keys re-derived the new way; the personal parts moved to where the reader's view takes them

Until the "personal data" change (001 §2.15, 002 §3.1) the rules put students' OS user names,
URLs and home folders into incident titles, params and dedup keys, which the director reads
and logs keep.  The rules now write none (`policy_server.rules` "personal data") and the
reader's view (`incidents.service.reader_params`) adds the OS user from the incident's own
`os_user` column and the URL from the incident's events, for those who may see them.  This
revision rewrites the incidents stored before that:

* params: `os_user` moves to the `os_user` column (when that is empty) and leaves the params;
  `url` and `comment` leave the params (the events keep them: the reader's view shows the
  URL from there); a `path` loses the account's name (/home/student7/x -> /home/…/x);
* titles: "Bad page reported: <url>" -> "Bad page reported on <host>"; "Filter bypass attempt
  (<kind>) by <user>" -> "… on <seat>"; home folders in any title lose the account's name;
* dedup keys: the OS user becomes its pseudonym, a reported URL and a file path their digest
  — the same keys the rules make now, so a new event of an old incident still joins it.

The helpers are frozen copies of `policy_server.rules` (pseudonym, digest, redact_path) as of
this revision: a migration must give the same result whatever the rules become later.
Idempotent (a scrubbed incident is left as it is).  Downgrade: nothing to undo (the personal
data is not put back).

Revision ID: 0105_incidents_scrub_pii
Revises: 0104_incidents_by_agent
Create Date: 2026-12-04
"""
from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import urlsplit

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
from alembic import op

revision = '0105_incidents_scrub_pii'
down_revision = '0104_incidents_by_agent'
branch_labels = None
depends_on = None

_HOME = re.compile(r"(?i)(/home/|/Users/|[A-Z]:\\Users\\|/var/mail/|/run/user/)([^/\\]+)")
_HEX = re.compile(r"^[0-9a-f]+$")
_PSEUDONYM = re.compile(r"^(u[0-9a-f]{16}|-)$")
_KEY_LEN = 300
_TITLE_LEN = 300
BATCH = 500


def pseudonym(value: str | None) -> str:
    if not value:
        return "-"
    return "u" + hashlib.sha256(f"kalkan-dedup:{value}".encode()).hexdigest()[:16]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def redact_path(path):
    if path is None:
        return None
    return _HOME.sub(lambda m: m.group(1) + "…", str(path))


def _host(url: str) -> str:
    try:
        return (urlsplit(url if "//" in url else f"http://{url}").hostname or url).lower()
    except ValueError:
        return url.lower()


def _is_digest(text: str) -> bool:
    return len(text) == 24 and bool(_HEX.match(text))


def _who_key(prefix: str, agent_id, os_user, rest: str | None, stored: str) -> str:
    """`<rule>:<agent>:<user>[:<rest>]`: the user's pseudonym instead of the name."""
    parts = stored.split(":")
    if len(parts) >= 3 and _PSEUDONYM.match(parts[2]):
        return stored  # already the new way
    key = f"{prefix}:{agent_id}:{pseudonym(os_user)}"
    return key + (f":{rest}" if rest is not None else "")


def scrub(row: dict, hostname: str | None) -> dict:
    """The incident's new title, params, dedup_key and os_user (pure: tested by the migration test)."""
    rule, title, key = row["rule"], row["title"] or "", row["dedup_key"] or ""
    params = dict(row["params"] or {})
    os_user = row["os_user"]
    if params.get("os_user") and not os_user:
        os_user = str(params["os_user"])[:64]
    params.pop("os_user", None)
    url = params.pop("url", None)
    params.pop("comment", None)
    if "path" in params:
        params["path"] = redact_path(params["path"])

    if rule == "web.report":
        host = params.get("host") or (_host(str(url)) if url else None)
        if title.startswith("Bad page reported: "):
            old_url = title[len("Bad page reported: "):]
            host = host or _host(old_url)
            title = f"Bad page reported on {(host or '?')[:200]}"
        if host and "host" not in params:
            params["host"] = host
        rest = key[len("web.report:"):]
        if key.startswith("web.report:") and not _is_digest(rest):
            key = f"web.report:{digest(rest)}"
    elif rule == "web.unblock_request":
        if url and "host" not in params:
            params["host"] = _host(str(url))
    elif rule == "web.blocked":
        key = _who_key("web.blocked", row["agent_id"], os_user, None, key)
    elif rule == "web.alert":
        rest = key.rsplit(":", 1)[-1] if key.count(":") >= 3 else "other"
        key = _who_key("web.alert", row["agent_id"], os_user, rest, key)
    elif rule == "net.bypass":
        kind = str(params.get("kind") or key.rsplit(":", 1)[-1] or "other")
        match = re.match(r"^Filter bypass attempt \((.*)\) by .*$", title, re.S)
        if match:
            where = row["seat"] or hostname or row["agent_id"]
            title = f"Filter bypass attempt ({match.group(1)}) on {where}"
        key = _who_key("net.bypass", row["agent_id"], os_user, kind, key)
    elif rule == "av.threat":
        prefix = f"av.threat:{row['agent_id']}:"
        if key.startswith(prefix):
            rest = key[len(prefix):]
            is_sha256 = len(rest) == 64 and bool(_HEX.match(rest))
            if not is_sha256 and not _is_digest(rest):
                key = prefix + digest(rest)
    title = redact_path(title)[:_TITLE_LEN]
    if _HOME.search(key):
        key = redact_path(key)
    return {"title": title, "params": params, "dedup_key": key[:_KEY_LEN], "os_user": os_user}


def upgrade() -> None:
    bind = op.get_bind()
    json_type = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
    incidents = sa.table("incidents", sa.column("id", sa.Integer), sa.column("rule", sa.String),
                         sa.column("title", sa.String), sa.column("params", json_type),
                         sa.column("dedup_key", sa.String), sa.column("os_user", sa.String),
                         sa.column("agent_id", sa.String), sa.column("seat", sa.String))
    workstations = sa.table("workstations", sa.column("id", sa.String), sa.column("hostname", sa.String))
    hostnames = dict(bind.execute(sa.select(workstations.c.id, workstations.c.hostname)).all())
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(incidents.c.id, incidents.c.rule, incidents.c.title, incidents.c.params,
                      incidents.c.dedup_key, incidents.c.os_user, incidents.c.agent_id, incidents.c.seat)
            .where(incidents.c.id > last_id).order_by(incidents.c.id).limit(BATCH)).mappings().all()
        if not rows:
            break
        for row in rows:
            row = dict(row)
            if isinstance(row["params"], str):  # JSON as text on some drivers
                row["params"] = json.loads(row["params"])
            new = scrub(row, hostnames.get(row["agent_id"]))
            old = {k: row[k] for k in ("title", "params", "dedup_key", "os_user")}
            if new != {**old, "params": dict(old["params"] or {})}:
                bind.execute(incidents.update().where(incidents.c.id == row["id"]).values(**new))
        last_id = rows[-1]["id"]


def downgrade() -> None:
    pass  # the personal data is not put back
