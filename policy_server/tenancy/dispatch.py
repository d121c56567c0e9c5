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
its own.  What still needs a restart: a school removed or renamed, hosts changed, and a school on
SQLite added to a service of several workers (one writer: the service must run as one process).
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

    def added_schools(self) -> list[SchoolEntry]:
        """The registry's schools this service does not serve yet and can serve now (the file is
        read again only when its size or time changed); the others are logged, once per change."""
        stamp = _stamp(self._registry)
        if stamp == self._registry_stamp:
            return []
        self._registry_stamp = stamp
        try:
            entries = load(self.settings)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # written by hand, half-copied
            log.warning("kalkan: %s cannot be read (%s); serving the schools as before", self._registry, exc)
            return []
        added = []
        for entry in entries:
            if entry.slug in self.apps:
                continue
            taken = [h for h in entry.hosts if h in self.by_host]
            if taken:
                log.warning("kalkan: school %s not served: its host %s belongs to another school", entry.slug,
                            taken[0])
            elif not self.one_process and not (entry.db_url or "").startswith("postgresql"):
                log.warning("kalkan: school %s is on SQLite (one writer) and this service runs several "
                            "workers: restart the service to serve it (it then runs as one process)",
                            entry.slug)
            else:
                added.append(entry)
        return added

    async def _start_added_schools(self, running: AsyncExitStack) -> None:
        for entry in self.added_schools():
            try:
                app = await asyncio.to_thread(self._build, entry)  # migrations, the CA: off the loop
                await running.enter_async_context(app.router.lifespan_context(app))
            except Exception:  # noqa: BLE001 — the others go on
                log.exception("kalkan: school %s could not be started; it is tried again when schools.json "
                              "changes, or at the service's restart", entry.slug)
                continue
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
        await app(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        stack = AsyncExitStack()
        try:
            for app in self.apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
        except BaseException as exc:  # noqa: BLE001 — reported to the server, which stops
            await stack.aclose()
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        # Until the shutdown: the registry looked at every REGISTRY_CHECK_S, or at once when a
        # request asks for a host no school has.  Schools added are started here, in the task
        # that entered the others, so that they stop with them.
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
                    await self._start_added_schools(stack)
                finally:
                    self._looking = False
                    looked.set()
        finally:
            shutdown.cancel()
            self._look_now = self._looked = None
            try:
                await stack.aclose()
            finally:
                await send({"type": "lifespan.shutdown.complete"})


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
