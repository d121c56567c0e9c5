"""The FastAPI application: `create_app(settings)` wires the database, the routers and the
policy push hub.  Thin: each domain package has its own `views.py`."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import threading
import weakref
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from policy_server import protocol, serving
from policy_server.certs.announce import AnnounceNextPin
from policy_server.certs.rotation import CertFiles
from policy_server.checks.scheduler import CheckScheduler, periodic_check_jobs, summary_jobs
from policy_server.db import migrate
from policy_server.db.retention import retention_jobs
from policy_server.db.session import make_engine, make_sessionmaker
from policy_server.errors import KalkanError
from policy_server.events.partitions import partition_jobs
from policy_server.filtering.jobs import filtering_jobs
from policy_server.fleet.service import fleet_jobs
from policy_server.health.service import UNAVAILABLE_ERRORS, HealthCache, unavailable_response
from policy_server.notices.service import badge_counter
from policy_server.operations.backup import backup_jobs
from policy_server.operations.metrics import Registry as MetricsRegistry
from policy_server.scope import NotAllowed, NotLoggedIn
from policy_server.security.errors import install_input_errors
from policy_server.security.headers import SecurityHeaders
from policy_server.security.throttle import LoginThrottle
from policy_server.settings import Settings
from policy_server.tls import ensure_school_ca
from policy_server.web.i18n import parse_accept_language

log = logging.getLogger("kalkan.server")

API_ROUTERS = (
    "policy_server.people.views",
    "policy_server.agents.views",
    "policy_server.events.views",
    "policy_server.policies.views",
    "policy_server.incidents.views",
    "policy_server.admin_views",
    "policy_server.filtering.views",
    "policy_server.filtering.pages",
    "policy_server.health.views",
    "policy_server.security.views",
    "policy_server.people.pages",
    "policy_server.school.pages",
    "policy_server.fleet.pages",
    "policy_server.fleet.audit_pages",
    "policy_server.isuo.views",
    "policy_server.isuo.pages",
    "policy_server.summaries.pages",
    "policy_server.district.views",
    "policy_server.district.pages",
    "policy_server.lessons.views",
    "policy_server.lessons.pages",
    "policy_server.operations.views",
    "policy_server.operations.seat_views",
    "policy_server.upgrades.views",
    "policy_server.upgrades.pages",
    "policy_server.certs.pages",
)
WEB_ROUTER = "policy_server.web.routes"


def _optional_router(module_name: str):
    """The module's `router`, or None when the module does not exist yet."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    return getattr(module, "router", None)


def api_language(accept_language: str | None) -> str:
    """The language of the API's error texts: the first of ky/ru/en in Accept-Language, else English."""
    preferred = parse_accept_language(accept_language)
    return preferred[0] if preferred else "en"


def _close_streams_on_signal(hub) -> None:
    """On SIGTERM/SIGINT, end the push streams first, then let uvicorn shut down as usual.

    uvicorn waits for open connections before the lifespan's shutdown runs; an SSE stream
    never ends by itself, so without this every stop waited out the graceful timeout and
    logged the cancelled streams as errors.  Chained to uvicorn's own handler (installed
    before the lifespan starts); nothing is installed outside the main thread (tests)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    # Weakly: a school removed while the service runs leaves its handler in the chain, but not
    # its hub (nor, through it, its app) alive until the process exits.
    hub_ref = weakref.ref(hub)
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            live = hub_ref()
            if live is not None:
                loop.call_soon_threadsafe(live.close_all)
            previous(signum, frame)

        signal.signal(sig, handler)


def _sqlite_path(engine) -> Path | None:
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    return Path(engine.url.database)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    settings.ensure_state_dir()
    serving.install()  # a quick, quiet stop under uvicorn (policy_server/serving.py)
    engine = make_engine(settings.database_url)
    if settings.migrate_on_start:
        migrate.upgrade(engine)
    ensure_school_ca(settings.ca_cert_path, settings.ca_key_path)

    from policy_server.policies.push import PushHub

    hub = PushHub()
    from policy_server.lessons.ticker import LessonTicker  # lessons end on time (issue 13)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await hub.start(app.state.sessionmaker)
        await app.state.checks.start()
        if app.state.lesson_ticker not in getattr(app.state.checks, "also", ()):  # led: workers.py
            await app.state.lesson_ticker.start()
        _close_streams_on_signal(hub)
        try:
            yield
        finally:
            await app.state.lesson_ticker.stop()
            await app.state.checks.stop()
            await hub.stop()
            engine.dispose()

    # /docs and /openapi.json: policy_server/security/views.py (admin only, no CDN).
    app = FastAPI(title="Kalkan policy server", version=str(protocol.PROTOCOL_VERSION), lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.add_middleware(SecurityHeaders, tls=bool(settings.tls))  # policy_server/security/headers.py
    app.add_middleware(AnnounceNextPin, files=CertFiles.of(settings))  # policy_server/certs (rotation)
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.push_hub = hub
    app.state.login_throttle = LoginThrottle(account_limits=settings.login_account_limits,
                                             address_limits=settings.login_address_limits,
                                             storage_uri=settings.login_limit_storage)
    app.state.health = HealthCache(app.state.sessionmaker, dialect=engine.dialect.name,
                                   state_dir=settings.state_dir, sqlite_path=_sqlite_path(engine))
    app.state.lesson_ticker = LessonTicker(app.state.sessionmaker)
    app.state.notice_count = badge_counter(app.state.sessionmaker)  # the menu's badge, this school's
    app.state.metrics = MetricsRegistry()  # /metrics counters, this school's (operations/metrics.py)
    # periodic checks (weekly scan overdue, ISUO cross-checks): docs/server.md "Periodic checks"
    app.state.checks = CheckScheduler(
        app.state.sessionmaker,
        periodic_check_jobs(scan_interval_s=settings.checks_interval_s,
                            isuo_interval_s=settings.isuo_checks_interval_s)
        + summary_jobs(settings)
        + fleet_jobs(settings)  # fleet health: control changes noted every 10 min (issue 11)
        + backup_jobs(settings)
        + retention_jobs(settings),  # minors' browsing records past their days (001 §2.15)
        first_delay_s=settings.checks_first_delay_s,
        metrics=app.state.metrics,  # its runs counted in this school's /metrics
    )
    app.state.checks.jobs += filtering_jobs(settings.state_dir)  # weekly lists update, expiring allows
    app.state.checks.jobs += partition_jobs(settings)  # PostgreSQL: events' months made ahead (issue 16)
    from policy_server.workers import lead_on_postgres

    lead_on_postgres(app)  # PostgreSQL: checks and the lessons' clock in one leader of all processes

    app.state.level = settings.level  # "school" or "district" (docs/reports.md)

    @app.exception_handler(KalkanError)
    async def _kalkan_error(request: Request, exc: KalkanError) -> Response:
        path = request.url.path
        is_json = path.startswith("/api/") or path.endswith(".json")
        if isinstance(exc, NotLoggedIn | NotAllowed) and not is_json:
            # A page: the login redirect or the error page in the reader's language.
            from policy_server.web.routes import scope_error_page

            return await run_in_threadpool(scope_error_page, request, exc)
        # `code` is for programs; `detail` is for a person, in the language the request asks
        # for.  English unless asked: the agent and scripts send no Accept-Language.
        language = api_language(request.headers.get("accept-language"))
        return JSONResponse({"detail": exc.in_language(language), "code": exc.code or None},
                            status_code=exc.status_code, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg')}")
        path = request.url.path
        if not (path.startswith("/api/") or path.endswith(".json")):  # a page: the console's error page
            from policy_server.security.errors import form_error_page, validation_error_page

            if request.method != "GET":  # a form: the summary naming each field and the fix
                return await run_in_threadpool(form_error_page, request, list(exc.errors()))
            fields = [str(err.get("loc", ("",))[-1]) for err in exc.errors()]
            return await run_in_threadpool(validation_error_page, request, fields)
        return JSONResponse({"detail": "the request is not valid: " + "; ".join(parts),
                             "code": "request.invalid"}, status_code=422)

    install_input_errors(app)  # numbers past the database's range: 422, never 500

    # the database cannot work now (disk full, connection lost): a typed 503, one short log line
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, unavailable_response)

    for module_name in API_ROUTERS:
        router = _optional_router(module_name)
        if router is not None:
            app.include_router(router)
    web_router = _optional_router(WEB_ROUTER)
    if web_router is not None:
        app.include_router(web_router)
    return app
