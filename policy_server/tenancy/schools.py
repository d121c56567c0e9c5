"""The service's list of schools: `<state_dir>/schools.json` (made by `kalkan-server schools add`).

One entry per school: a short name (`slug`, also its folder `<state_dir>/schools/<slug>`),
its display name, the host names its people and seats use (each host belongs to one school
only), and its database URL (None: an SQLite file in its folder).  With no such file the
server is a single school, exactly as before.

On a PostgreSQL service (`--db postgresql+psycopg://…`) `add_school` makes a database of its
own for the school on the same PostgreSQL server (`kalkan_<slug>`): LISTEN/NOTIFY channels and
advisory locks are per database, so the policy push and the periodic-jobs leader stay inside
the school as well.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from policy_server.errors import Conflict, InvalidInput, KalkanError, NotFound
from policy_server.settings import Settings

REGISTRY_NAME = "schools.json"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$|^[a-z0-9]$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


@dataclass(frozen=True)
class SchoolEntry:
    slug: str
    name: str
    hosts: tuple[str, ...]
    db_url: str | None = None  # None: SQLite in the school's folder

    def state_dir(self, service: Settings) -> Path:
        return Path(service.state_dir) / "schools" / self.slug

    def to_json(self) -> dict:
        return {"slug": self.slug, "name": self.name, "hosts": list(self.hosts), "db_url": self.db_url}


def registry_path(service: Settings) -> Path:
    return Path(service.state_dir) / REGISTRY_NAME


def is_multi_school(service: Settings) -> bool:
    return registry_path(service).exists()


def load(service: Settings) -> list[SchoolEntry]:
    path = registry_path(service)
    if not path.exists():
        return []
    raw = json.loads(path.read_text())
    return [SchoolEntry(slug=s["slug"], name=s["name"], hosts=tuple(s["hosts"]), db_url=s.get("db_url"))
            for s in raw["schools"]]


def _save(service: Settings, schools: list[SchoolEntry]) -> None:
    path = registry_path(service)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".json.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # database URLs may hold passwords
    with os.fdopen(fd, "w") as out:
        json.dump({"schools": [s.to_json() for s in schools]}, out, indent=2, ensure_ascii=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _one_at_a_time(change):
    """The registry changed by one command at a time (`flock` on `schools.json.lock`): two
    commands at once would each write the list they read, and one change would be lost."""

    @functools.wraps(change)
    def locked(service: Settings, **kwargs):
        path = registry_path(service)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path.with_suffix(".json.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return change(service, **kwargs)
        finally:
            os.close(fd)

    return locked


def normalise_host(host: str) -> str:
    """A request's or an option's host name as compared: lowercase, no port, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8443
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def check_host(host: str) -> str:
    value = normalise_host(host)
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not value or len(value) > 253 or not _HOST.match(value):
        raise InvalidInput(f"{host!r} is not a host name; give the name the school's people and seats use, "
                           "e.g. school-12.district.kg", code="schools.bad_host", params={"host": host})
    return value


def school_settings(service: Settings, entry: SchoolEntry) -> Settings:
    """The settings of one school's app: its folder and database, the service's listening
    address and TLS certificate, everything else as the service's."""
    return dataclasses.replace(
        service, state_dir=entry.state_dir(service), db_url=entry.db_url,
        tls_dir=str(service.cert_path.parent),
        # each school's backups in a folder of their own: the newest-file check and the
        # keep-N pruning must only ever see that school's files
        backup_dir=str(Path(service.backup_dir) / entry.slug) if service.backup_dir else None,
        public_url=(f"{'https' if service.tls else 'http'}://{entry.hosts[0]}:{service.port}"
                    if service.public_url is None else service.public_url),
    )


def find(service: Settings, slug: str) -> SchoolEntry:
    for entry in load(service):
        if entry.slug == slug:
            return entry
    known = ", ".join(e.slug for e in load(service)) or "none yet"
    raise NotFound(f"no school {slug!r} on this service (schools: {known}); add it with "
                   "`kalkan-server schools add`", code="schools.unknown",
                   params={"slug": slug, "known": known})


def _school_database(service: Settings, slug: str) -> str | None:
    """A new PostgreSQL database for the school on the service's server; None on SQLite."""
    if not service.db_url or not service.db_url.startswith("postgresql"):
        return None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    name = "kalkan_" + slug.replace("-", "_")
    engine = create_engine(service.db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                        {"n": name}).scalar()
            if exists:
                raise Conflict(f"the PostgreSQL database {name} exists already; give the school another "
                               "short name, or its database with --school-db", code="schools.database_exists",
                               params={"database": name})
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as exc:
        problem = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise KalkanError(f"could not make the school's PostgreSQL database {name} ({problem}); give the "
                          "service's user the right to make databases (ALTER ROLE … CREATEDB), or make the "
                          "database yourself and give it with --school-db",
                          code="schools.cannot_create_database", params={"database": name, "problem": problem}
                          ) from None
    finally:
        engine.dispose()
    return make_url(service.db_url).set(database=name).render_as_string(hide_password=False)


@_one_at_a_time
def add_school(service: Settings, *, slug: str, name: str, hosts: list[str],
               db_url: str | None = None, actor: str = "cli") -> SchoolEntry:
    """Register a school, make its database (migrated, with its `School` row) and folder."""
    from policy_server.db import migrate
    from policy_server.db.session import check_db_url, make_engine, make_sessionmaker
    from policy_server.school.service import ensure_school

    if not _SLUG.match(slug or ""):
        raise InvalidInput(f"{slug!r} is not a school short name: use 1-40 lowercase letters, digits "
                           "and '-', e.g. school-12", code="schools.bad_slug", params={"slug": slug})
    if not hosts:
        raise InvalidInput("give at least one --host: the name the school's people and seats use",
                           code="schools.no_host")
    hosts = list(dict.fromkeys(check_host(h) for h in hosts))
    schools = load(service)
    if any(s.slug == slug for s in schools):
        raise Conflict(f"the school {slug!r} is on this service already", code="schools.duplicate",
                       params={"slug": slug})
    for entry in schools:
        taken = set(hosts) & set(entry.hosts)
        if taken:
            raise Conflict(f"the host {sorted(taken)[0]} belongs to the school {entry.slug!r} already; "
                           "each host name serves one school", code="schools.host_taken",
                           params={"host": sorted(taken)[0], "slug": entry.slug})
    if db_url:
        check_db_url(db_url)
    entry = SchoolEntry(slug=slug, name=name or slug, hosts=tuple(hosts),
                        db_url=db_url or _school_database(service, slug))
    settings = school_settings(service, entry)
    settings.ensure_state_dir()
    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        with make_sessionmaker(engine)() as db:
            ensure_school(db, name=entry.name, actor=actor)
            db.commit()
    finally:
        engine.dispose()
    _save(service, [*schools, entry])
    _service_audit(service, actor=actor, action="school.add", slug=slug,
                   detail={"hosts": list(entry.hosts), "database": database_label(service, entry)})
    return entry


# ---------------------------------------------------------------- schools removed, hosts changed
# (`kalkan-server schools remove` / `schools hosts`; a running service notices within
# dispatch.REGISTRY_CHECK_S: tenancy/dispatch.py)

AUDIT_NAME = "schools-audit.log"
DROP_WAIT_S = 20.0  # a running service lets go of a removed school's database within this


def _service_audit(service: Settings, *, actor: str, action: str, slug: str, detail: dict) -> None:
    """One JSON line a change in `<state_dir>/schools-audit.log` (root-only readable): the
    service's own trail, which outlives a school's dropped database."""
    from datetime import UTC, datetime

    line = json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"), "actor": actor,
                       "action": action, "school": slug, **detail}, ensure_ascii=False)
    fd = os.open(Path(service.state_dir) / AUDIT_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(line + "\n")


def _school_audit(service: Settings, entry: SchoolEntry, *, actor: str, action: str, detail: dict) -> bool:
    """The change in the school's own audit trail too (its console's audit page); False if its
    database cannot be reached (the change goes on: the service's trail has it)."""
    import logging

    from policy_server.audit import audit
    from policy_server.db.session import make_engine, make_sessionmaker

    try:
        engine = make_engine(school_settings(service, entry).database_url)
        try:
            with make_sessionmaker(engine)() as db:
                audit(db, actor=actor, action=action, target=entry.slug, detail=detail)
                db.commit()
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 — a school whose database is gone can still be removed
        logging.getLogger("kalkan.tenancy").warning("school %s: %s not in its audit trail (%s)",
                                                    entry.slug, action, exc)
        return False
    return True


def database_label(service: Settings, entry: SchoolEntry) -> str:
    """The school's database as the operator reads it (no password)."""
    from sqlalchemy.engine import make_url

    url = make_url(school_settings(service, entry).database_url)
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.render_as_string(hide_password=True)


@_one_at_a_time
def remove_school(service: Settings, *, slug: str, actor: str = "cli") -> SchoolEntry:
    """The school off the registry (its database and folder kept: `drop_school_database`)."""
    schools = load(service)
    entry = find(service, slug)
    if len(schools) == 1:
        raise Conflict(f"the school {slug!r} is this service's only school; a service needs one: stop "
                       "the service instead, or add the school that takes its place first",
                       code="schools.last_school", params={"slug": slug})
    detail = {"hosts": list(entry.hosts), "database": database_label(service, entry)}
    _school_audit(service, entry, actor=actor, action="school.remove", detail=detail)
    _save(service, [s for s in schools if s.slug != slug])
    _service_audit(service, actor=actor, action="school.remove", slug=slug, detail=detail)
    return entry


def drop_school_database(service: Settings, entry: SchoolEntry, *, actor: str = "cli",
                         wait_s: float = DROP_WAIT_S) -> str:
    """Drop a removed school's database: PostgreSQL `DROP DATABASE` (waiting up to `wait_s` for a
    running service to let go of it, then ending its connections), SQLite its file.  Returns
    what was dropped."""
    import time

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    label = database_label(service, entry)
    url = make_url(school_settings(service, entry).database_url)
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(url.database) + suffix).unlink(missing_ok=True)
    else:
        name = url.database
        admin = make_url(service.db_url) if (service.db_url or "").startswith("postgresql") else url
        if admin.database == name or admin.host != url.host or admin.port != url.port:
            admin = url.set(database="postgres")
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + wait_s
        try:
            with engine.connect() as connection:
                while True:
                    force = time.monotonic() >= deadline
                    try:
                        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'
                                                + (" WITH (FORCE)" if force else "")))
                        break
                    except DBAPIError as exc:
                        if force or "other users" not in str(exc.orig):  # (in use: wait for the service)
                            problem = (str(exc.orig).strip().splitlines() or [type(exc).__name__])[0]
                            raise KalkanError(
                                f"could not drop the school's database {name} ({problem}); the school is "
                                "removed from the service, drop the database yourself",
                                code="schools.cannot_drop_database",
                                params={"database": name, "problem": problem}) from None
                        time.sleep(0.5)
        finally:
            engine.dispose()
    _service_audit(service, actor=actor, action="school.drop_database", slug=entry.slug,
                   detail={"database": label})
    return label


@_one_at_a_time
def set_hosts(service: Settings, *, slug: str, hosts: list[str], actor: str = "cli"
              ) -> tuple[SchoolEntry, SchoolEntry]:
    """New host names for a school (checked as `add_school` checks them); returns (before, after)."""
    if not hosts:
        raise InvalidInput("give at least one --host: the name the school's people and seats use",
                           code="schools.no_host")
    hosts = list(dict.fromkeys(check_host(h) for h in hosts))
    schools = load(service)
    entry = find(service, slug)
    for other in schools:
        taken = set(hosts) & set(other.hosts) if other.slug != slug else set()
        if taken:
            raise Conflict(f"the host {sorted(taken)[0]} belongs to the school {other.slug!r} already; "
                           "each host name serves one school", code="schools.host_taken",
                           params={"host": sorted(taken)[0], "slug": other.slug})
    changed = dataclasses.replace(entry, hosts=tuple(hosts))
    if changed.hosts != entry.hosts:
        detail = {"before": list(entry.hosts), "after": list(changed.hosts)}
        _school_audit(service, entry, actor=actor, action="school.hosts", detail=detail)
        _save(service, [changed if s.slug == slug else s for s in schools])
        _service_audit(service, actor=actor, action="school.hosts", slug=slug, detail=detail)
    return entry, changed
