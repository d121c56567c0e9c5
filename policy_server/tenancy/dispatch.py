"""One ASGI app in front of every school's own app, chosen by the request's host name.

`SchoolsService(settings)` builds one `create_app` per school of the registry
(tenancy/schools.py), each on the school's own database and folder, and answers each request
with the app of the school its `Host` names; a host that is no school's gets a 404 that names
no school.  Everything a school's app holds — its engine and sessions, push hub, login
throttle, lesson ticker, periodic jobs, `/metrics` counters — is its own, so a login session,
an agent token, an enrolment code, a policy push or a periodic job of one school is unknown to
every other: people and agents of school A that ask at school B's host are strangers there
(401/404), and school B's console cannot name anything of A, its database has none of it.

The ASGI lifespan starts every school's own lifespan (push hub, checks, ticker) and stops them
in reverse order.  Several worker processes (or replicas) on PostgreSQL: `service_worker_app`;
each school's checks run in one leader of all of them (`workers.LeaderChecks`, set up by
`create_app`; PostgreSQL advisory locks are per database, so each school has its own).

A school added while the service runs (`kalkan-server schools add`) is served without a
restart: the lifespan looks at `schools.json` every REGISTRY_CHECK_S (a `stat`; the file is read
only when it changed), and a request for a host no school has looks at once.  The new school's
app is built off the event loop, its lifespan is entered in the service's lifespan (so it stops
with the others), and only then does its host name lead to it.  Each worker process does this on
its own.

The same look notices a school removed (`kalkan-server schools remove`) and a school's host
names changed (`kalkan-server schools hosts`).  A removed school's hosts lead nowhere at once
(404, as an unknown host), its push streams are ended (its agents reconnect and get the 404),
the requests it is still answering get up to REMOVE_DRAIN_S to finish, and then its lifespan is
left — periodic jobs, lesson ticker and push hub stopped, its database engine disposed — in the
task that entered it; the other schools' requests are not touched.  Hosts changed: only the
host-to-app map changes (and the school's public address when it came from its first host);
the app, its sessions, jobs and streams go on.  What still needs a restart: a school renamed,
and a school on SQLite added to a service of several workers (one writer: the service must run
as one process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from contextlib import AsyncExitStack

from policy_server.settings import Settings
from policy_server.tenancy.schools import SchoolEntry, load, normalise_host, registry_path, school_settings

log = logging.getLogger("kalkan.tenancy")
REGISTRY_CHECK_S = 2.0
NEW_SCHOOL_WAIT_S = 30.0  # a request for a school just added waits this long for its app at most
REMOVE_DRAIN_S = 10.0  # a removed school's requests in flight get this long to finish


class SchoolsService:
    def __init__(self, settings: Settings, *, migrate: bool = True, one_process: bool = True) -> None:
        self.settings = settings
        self.migrate = migrate
        self.one_process = one_process  # False: one of several workers (PostgreSQL schools only)
        self._registry = registry_path(settings)
        self._registry_stamp = _stamp(self._registry)
        self.schools: list[SchoolEntry] = load(settings)
        if not self.schools:
            raise ValueError(f"no school in {settings.state_dir}/schools.json: add one with "
                             "`kalkan-server schools add`")
        self.apps = {}  # slug -> FastAPI app
        self.by_host = {}  # normalised host -> FastAPI app
        self._running: dict[str, AsyncExitStack] = {}  # slug -> its lifespan, while the service runs
        self._in_flight: dict[str, int] = {}  # slug -> requests (and streams) being answered
        for entry in self.schools:
            self._serve(entry, self._build(entry))
        self._look_now: asyncio.Event | None = None
        self._looked: asyncio.Event | None = None  # set after each look at the registry
        self._looking = False  # a look (and the start of what it found) is under way

    def _build(self, entry: SchoolEntry):
        from policy_server.app import create_app

        settings = dataclasses.replace(school_settings(self.settings, entry), migrate_on_start=self.migrate)
        app = create_app(settings)
        app.state.school_slug = entry.slug  # (on PostgreSQL create_app puts its checks under
        # `workers.LeaderChecks`: one leader per school, the advisory lock is per database)
        return app

    def _serve(self, entry: SchoolEntry, app) -> None:
        self.apps[entry.slug] = app
        for host in entry.hosts:
            self.by_host[host] = app

    def app_for(self, host: str):
        return self.by_host.get(normalise_host(host))

    # ------------------------------------------------------------------ schools added live

    def registry_changes(self) -> tuple[list[str], list[SchoolEntry], list[SchoolEntry]]:
        """What changed in the registry since the last look: (schools removed, schools whose host
        names changed, schools added that can be served now).  The file is read again only when
        its size or time changed; what cannot be done is logged, once per change."""
        stamp = _stamp(self._registry)
        if stamp == self._registry_stamp:
            return [], [], []
        self._registry_stamp = stamp
        try:
            entries = load(self.settings)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # written by hand, half-copied
            log.warning("kalkan: %s cannot be read (%s); serving the schools as before", self._registry, exc)
            return [], [], []
        listed = {entry.slug for entry in entries}
        removed = [slug for slug in self.apps if slug not in listed]
        served = {e.slug: e for e in self.schools}
        # the hosts each served school keeps once the removals are done: what others may not claim
        owner = {h: e.slug for e in self.schools if e.slug not in removed for h in e.hosts}
        rehosted, added = [], []
        for entry in entries:
            old = served.get(entry.slug)
            if old is not None and old.hosts == entry.hosts:  # (the order too: the first is its address)
                continue
            taken = [h for h in entry.hosts if owner.get(h, entry.slug) != entry.slug]
            if taken:
                log.warning("kalkan: school %s not %s: its host %s belongs to the school %s", entry.slug,
                            "re-routed" if old else "served", taken[0], owner[taken[0]])
            elif old is not None:
                rehosted.append(entry)
            elif not self.one_process and not (entry.db_url or "").startswith("postgresql"):
                log.warning("kalkan: school %s is on SQLite (one writer) and this service runs several "
                            "workers: restart the service to serve it (it then runs as one process)",
                            entry.slug)
                continue
            else:
                added.append(entry)
            if not taken:
                for host in (old.hosts if old else ()):
                    owner.pop(host, None)
                owner.update(dict.fromkeys(entry.hosts, entry.slug))
        return removed, rehosted, added

    def _unserve(self, slug: str):
        """The school's hosts lead nowhere from now on (404); returns its app."""
        app = self.apps.pop(slug)
        for host in [h for h, a in self.by_host.items() if a is app]:
            del self.by_host[host]
        self.schools = [e for e in self.schools if e.slug != slug]
        return app

    def _rehost(self, entry: SchoolEntry) -> None:
        """New host names for a served school: the same app (its sessions, jobs, streams go on)."""
        app = self.apps[entry.slug]
        old = next(e for e in self.schools if e.slug == entry.slug)
        for host in old.hosts:
            if self.by_host.get(host) is app:
                del self.by_host[host]
        for host in entry.hosts:
            self.by_host[host] = app
        settings = app.state.settings
        if self.settings.public_url is None:  # its address (seat command) came from its first host
            settings.public_url = school_settings(self.settings, entry).public_url
        self.schools = [entry if e.slug == entry.slug else e for e in self.schools]
        log.info("kalkan: school %s now served at %s (was %s)", entry.slug, ", ".join(entry.hosts),
                 ", ".join(old.hosts))

    async def _stop_removed_school(self, slug: str) -> None:
        app = self._unserve(slug)
        app.state.push_hub.close_all()  # its agents' streams end; they reconnect and get the 404
        deadline = asyncio.get_running_loop().time() + REMOVE_DRAIN_S
        while self._in_flight.get(slug) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self._in_flight.get(slug):
            log.warning("kalkan: school %s removed with %d requests still unanswered after %.0f s",
                        slug, self._in_flight[slug], REMOVE_DRAIN_S)
        running = self._running.pop(slug, None)
        try:
            if running is not None:
                await running.aclose()  # its jobs, ticker and push hub stop; its engine is disposed
        except Exception:  # noqa: BLE001 — the others go on
            log.exception("kalkan: school %s did not stop cleanly", slug)
        log.info("kalkan: school %s removed: no longer served", slug)

    async def _apply_registry_changes(self) -> None:
        removed, rehosted, added = self.registry_changes()
        for slug in removed:
            await self._stop_removed_school(slug)
        for entry in rehosted:
            self._rehost(entry)
        for entry in added:
            try:
                app = await asyncio.to_thread(self._build, entry)  # migrations, the CA: off the loop
                running = AsyncExitStack()
                await running.enter_async_context(app.router.lifespan_context(app))
            except Exception:  # noqa: BLE001 — the others go on
                log.exception("kalkan: school %s could not be started; it is tried again when schools.json "
                              "changes, or at the service's restart", entry.slug)
                continue
            self._running[entry.slug] = running
            self.schools.append(entry)
            self._serve(entry, app)
            log.info("kalkan: school %s added, served at %s", entry.slug, ", ".join(entry.hosts))

    async def _app_added_for(self, host: str):
        """A host no school has: the registry is looked at now (a school just added is served
        from its first request), else None."""
        if self._look_now is None or self._looked is None:
            return None  # (no lifespan: nothing can be started)
        if not self._looking and _stamp(self._registry) == self._registry_stamp:
            return None
        looked = self._looked
        self._look_now.set()
        try:
            await asyncio.wait_for(looked.wait(), NEW_SCHOOL_WAIT_S)
        except TimeoutError:
            return None
        return self.app_for(host)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        app = self.app_for(host) or await self._app_added_for(host)
        if app is None:
            await _unknown_host(scope, send, _header(scope, b"accept-language"))
            return
        slug = app.state.school_slug
        self._in_flight[slug] = self._in_flight.get(slug, 0) + 1  # (a removed school waits for these)
        try:
            await app(scope, receive, send)
        finally:
            self._in_flight[slug] -= 1

    async def _lifespan(self, receive, send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            for slug, app in list(self.apps.items()):
                running = AsyncExitStack()
                await running.enter_async_context(app.router.lifespan_context(app))
                self._running[slug] = running
        except BaseException as exc:  # noqa: BLE001 — reported to the server, which stops
            await self._stop_all()
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        # Until the shutdown: the registry looked at every REGISTRY_CHECK_S, or at once when a
        # request asks for a host no school has.  Schools added are started here, and schools
        # removed stopped here, in the task that entered the others' lifespans.
        self._look_now, self._looked = asyncio.Event(), asyncio.Event()
        shutdown = asyncio.ensure_future(receive())
        try:
            while not shutdown.done():
                asked = asyncio.ensure_future(self._look_now.wait())
                await asyncio.wait({shutdown, asked}, timeout=REGISTRY_CHECK_S,
                                   return_when=asyncio.FIRST_COMPLETED)
                asked.cancel()
                if shutdown.done():
                    break
                self._look_now.clear()
                looked, self._looked = self._looked, asyncio.Event()
                self._looking = True
                try:
                    await self._apply_registry_changes()
                finally:
                    self._looking = False
                    looked.set()
        finally:
            shutdown.cancel()
            self._look_now = self._looked = None
            try:
                await self._stop_all()
            finally:
                await send({"type": "lifespan.shutdown.complete"})

    async def _stop_all(self) -> None:
        """Every running school's lifespan left, the last started first."""
        problem = None
        while self._running:
            _slug, running = self._running.popitem()
            try:
                await running.aclose()
            except BaseException as exc:  # noqa: BLE001 — the others still stop
                problem = problem or exc
        if problem is not None:
            raise problem


def _stamp(path) -> tuple[int, int] | None:
    """What tells a changed registry file apart: its size and modification time."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _unknown_host(scope, send, accept_language: str | None) -> None:
    """404 in the language the request asks for (English by default, as the API's errors)."""
    from policy_server.tenancy.texts import UNKNOWN_HOST
    from policy_server.web.i18n import parse_accept_language, translate

    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    language = (parse_accept_language(accept_language) or ["en"])[0]
    body = json.dumps({"detail": translate(language, UNKNOWN_HOST), "code": "schools.unknown_host"},
                      ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def service_worker_app() -> SchoolsService:
    """uvicorn's app factory in each worker of a many-schools service on PostgreSQL."""
    from policy_server.cli import _tune_gc
    from policy_server.workers import _die_with_parent, settings_from_env

    _die_with_parent()
    service = SchoolsService(settings_from_env(), migrate=False, one_process=False)  # the parent migrated
    _tune_gc()
    return service


def migrate_all(settings: Settings) -> None:
    """Every school's database to the newest revision, and its CA made (before workers start)."""
    from policy_server.db import migrate
    from policy_server.db.session import make_engine
    from policy_server.tls import ensure_school_ca

    for entry in load(settings):
        school = school_settings(settings, entry)
        school.ensure_state_dir()
        engine = make_engine(school.database_url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        ensure_school_ca(school.ca_cert_path, school.ca_key_path)
