"""One ASGI app in front of every school's own app, chosen by the request's host name.

`SchoolsService(settings)` builds one `create_app` per school of the registry
(tenancy/schools.py), each on the school's own database and folder, and answers each request
with the app of the school its `Host` names; a host that is no school's gets a 404 that names
no school.  Everything a school's app holds — its engine and sessions, push hub, login
throttle, lesson ticker, periodic jobs — is its own, so a login session, an agent token, an
enrolment code, a policy push or a periodic job of one school is unknown to every other:
people and agents of school A that ask at school B's host are strangers there (401/404), and
school B's console cannot name anything of A, its database has none of it.

The ASGI lifespan starts every school's own lifespan (push hub, checks, ticker) and stops them
in reverse order.  Several worker processes (or replicas) on PostgreSQL: `service_worker_app`;
each school's checks run in one leader of all of them (`workers.LeaderChecks`, set up by
`create_app`; PostgreSQL advisory locks are per database, so each school has its own).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import AsyncExitStack

from policy_server.settings import Settings
from policy_server.tenancy.schools import SchoolEntry, load, normalise_host, school_settings

log = logging.getLogger("kalkan.tenancy")



class SchoolsService:
    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        from policy_server.app import create_app

        self.settings = settings
        self.schools: list[SchoolEntry] = load(settings)
        if not self.schools:
            raise ValueError(f"no school in {settings.state_dir}/schools.json: add one with "
                             "`kalkan-server schools add`")
        self.apps = {}  # slug -> FastAPI app
        self.by_host = {}  # normalised host -> FastAPI app
        for entry in self.schools:
            app = create_app(dataclasses.replace(school_settings(settings, entry), migrate_on_start=migrate))
            app.state.school_slug = entry.slug  # (on PostgreSQL create_app puts its checks under
            # `workers.LeaderChecks`: one leader per school, the advisory lock is per database)
            self.apps[entry.slug] = app
            for host in entry.hosts:
                self.by_host[host] = app

    def app_for(self, host: str):
        return self.by_host.get(normalise_host(host))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        app = self.app_for(host)
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
        message = await receive()
        try:
            await stack.aclose()
        finally:
            await send({"type": "lifespan.shutdown.complete"})


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
    service = SchoolsService(settings_from_env(), migrate=False)  # the parent migrated
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
