"""Many schools on one service (policy_server/tenancy): a real `kalkan-server run` process on a
real PostgreSQL, two schools added with `kalkan-server schools add`, each on its own database.

* the cross-school authorisation run: every route of the app × every method, with school A's
  people (each role's login session) and A's agent token, sent to school B's host: never an
  answer that lets them in, never a 5xx, never a word of A's data; the same credentials at
  A's own host do get A's data (so the run can fail);
* a person of A cannot log in at B; an agent enrolled in A cannot post into B;
* a policy change of A reaches A's agents only;
* the periodic jobs run per school (each school's scheduled backup, of its own database);
* an unknown host name gets a 404 naming no school.

The single-school path (no `schools.json`: today's install) is checked on SQLite by
`test_a_single_school_ignores_the_host_name`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from policy_server import protocol, scope
from policy_server.app import create_app
from policy_server.settings import Settings
from tests.support.server import REPO, KalkanServerProcess, free_port

PASSWORD = "cross-school-password-1"
HOSTS = {"school-a": "a.district.test", "school-b": "b.district.test"}
SECRETS = {
    "school-a": ("pupil-of-school-a", "path-of-school-a", "Lyceum Alatoo A"),
    "school-b": ("pupil-of-school-b", "path-of-school-b", "Gymnasium Bugu B"),
}
ROLES = ("admin", "teacher", "director", "district")


@dataclass
class School:
    slug: str
    host: str
    db_url: str
    agent_id: str = ""
    agent_token: str = ""
    cookies: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (cookie, csrf)
    ids: dict[str, str] = field(default_factory=dict)
    _engine: object = None

    def db(self):
        from policy_server.db.session import make_engine, make_sessionmaker

        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return make_sessionmaker(self._engine)()


@dataclass
class District:
    root: Path
    port: int
    proc: subprocess.Popen
    schools: dict[str, School]
    service_db: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, slug: str | None, **kwargs) -> httpx.Client:
        host = HOSTS[slug] if slug else "nobody.district.test"
        return httpx.Client(base_url=self.url, headers={"Host": host}, timeout=10, **kwargs)


def _cli(*args: str, root: Path, service_db: str, stdin: str = "") -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "policy_server.cli",
            *args,
            "--state-dir",
            str(root / "service"),
            "--db",
            service_db,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _populate(district: District, school: School) -> None:
    from policy_server.agents.service import create_enrollment_code, parse_expiry
    from policy_server.people.auth import SESSION_COOKIE, create_login_session
    from policy_server.people.service import create_person, get_person_by_username
    from policy_server.school.service import ensure_room, link_person_to_room

    pupil, path, _ = SECRETS[school.slug]
    with school.db() as db:
        room = ensure_room(db, name="Lab 1", actor="test")
        code = create_enrollment_code(db, actor="test", room="Lab 1", uses=1, expires_at=parse_expiry("1d"))
        for role in ROLES[1:]:
            create_person(db, username=f"{role}-{school.slug}", role=role, password=PASSWORD, actor="test")
        db.commit()
        school.ids["room_id"] = str(room.id)
    with district.client(school.slug) as client:
        r = client.post(
            "/api/v1/enroll", json={"code": code, "hostname": f"pc-{school.slug}", "seat": "s-01"}
        )
        assert r.status_code == 200, r.text
        school.agent_id, school.agent_token = r.json()["agent_id"], r.json()["token"]
        report = protocol.make_event(
            "web.report",
            {"url": f"http://site.example/{path}", "comment": "x"},
            subject=protocol.Subject(os_user=pupil, seat="s-01"),
        )
        r = client.post(
            "/api/v1/events",
            json={"events": [report.model_dump(mode="json")]},
            headers={"Authorization": f"Bearer {school.agent_token}"},
        )
        assert r.status_code == 200 and r.json()["accepted"], r.text
    from sqlalchemy import select

    from policy_server.db.models import Incident

    with school.db() as db:
        link_person_to_room(
            db, person_id=get_person_by_username(db, f"teacher-{school.slug}").id, room="Lab 1", actor="test"
        )
        school.ids["incident_id"] = str(
            db.scalar(select(Incident.id).where(Incident.agent_id == school.agent_id))
        )
        for role in ROLES:
            cookie, login = create_login_session(db, get_person_by_username(db, f"{role}-{school.slug}"))
            school.cookies[role] = (f"{SESSION_COOKIE}={cookie}", login.csrf_token)
        db.commit()


@pytest.fixture(scope="module")
def district(postgres_cluster, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("district")
    service_db = postgres_cluster.create_database()
    for slug, host in HOSTS.items():
        out = _cli(
            "schools",
            "add",
            slug,
            "--name",
            SECRETS[slug][2],
            "--host",
            host,
            "--admin",
            f"admin-{slug}",
            "--password-stdin",
            root=root,
            service_db=service_db,
            stdin=PASSWORD + "\n",
        )
        assert host in out
    listed = _cli("schools", "list", root=root, service_db=service_db)
    assert "school-a" in listed and "b.district.test" in listed
    from policy_server.tenancy.schools import load

    entries = {e.slug: e for e in load(Settings(state_dir=root / "service", db_url=service_db))}
    assert {e.db_url.rsplit("/", 1)[1] for e in entries.values()} == {"kalkan_school_a", "kalkan_school_b"}
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KALKAN_CHECKS_FIRST_DELAY_S": "1",
        "KALKAN_CHECKS_INTERVAL_S": "0",
        "KALKAN_ISUO_CHECKS_INTERVAL_S": "0",
        "KALKAN_SUMMARIES_INTERVAL_S": "0",
        "KALKAN_BACKUP_DIR": str(root / "backups"),
        "KALKAN_BACKUP_INTERVAL_S": "3600",
    }
    log = open(root / "server.log", "ab")  # noqa: SIM115  (the child keeps it)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "policy_server.cli",
            "run",
            "--state-dir",
            str(root / "service"),
            "--db",
            service_db,
            "--no-tls",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    log.close()
    schools = {slug: School(slug, HOSTS[slug], entries[slug].db_url) for slug in HOSTS}
    world = District(root=root, port=port, proc=proc, schools=schools, service_db=service_db)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with world.client("school-a") as client, world.client("school-b") as other:
                    if client.get("/healthz").status_code == 200 and other.get("/healthz").status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.2)
        for school in schools.values():
            _populate(world, school)
        yield world
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for school in schools.values():
            if school._engine is not None:
                school._engine.dispose()


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list:
    app = create_app(Settings(state_dir=tmp_path_factory.mktemp("routes"), tls=False))
    yield [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]
    app.state.engine.dispose()


def _send(client: httpx.Client, method: str, path: str, headers: dict, csrf: str | None) -> httpx.Response:
    kwargs: dict = {}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        kwargs = {"json": {}} if path.startswith("/api/") else {"data": {"csrf_token": csrf or ""}}
    response = client.send(client.build_request(method, path, headers=headers, **kwargs), stream=True)
    try:
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > 200_000 or response.headers.get("content-type", "").startswith(
                "text/event-stream"
            ):
                break
    finally:
        response.close()
    response._content = body
    return response


def _path(route, ids: dict[str, str]) -> str:
    path = route.path
    for param in route.dependant.path_params:
        path = path.replace("{" + param.name + "}", ids.get(param.name, "1"))
    return path


def _denied(response: httpx.Response, path: str) -> bool:
    if response.status_code in (401, 403, 404):
        return True
    return (
        not path.startswith("/api/")
        and response.status_code == 303
        and response.headers.get("location", "").startswith("/login")
    )


@pytest.mark.parametrize(("home", "away"), [("school-a", "school-b"), ("school-b", "school-a")])
def test_cross_school_run_of_every_route(district: District, routes, home: str, away: str):
    """One school's people and agent, at the other school's host, are strangers on every route."""
    a = district.schools[home]
    credentials = {
        role: {"Cookie": cookie, "X-CSRF-Token": csrf} for role, (cookie, csrf) in a.cookies.items()
    }
    credentials["agent"] = {"Authorization": f"Bearer {a.agent_token}"}
    violations, calls = [], 0
    with district.client(away, follow_redirects=False) as client:
        for route in routes:
            kind, _allowed = scope.route_scope(route)
            path = _path(route, a.ids)
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                for who, headers in credentials.items():
                    response = _send(client, method, path, headers, headers.get("X-CSRF-Token"))
                    calls += 1
                    where = f"{home}'s {who:8} at {away}: {method:6} {path} -> {response.status_code}"
                    if response.status_code >= 500:
                        violations.append(f"{where}: server error")
                    elif kind != "public" and not _denied(response, path):
                        violations.append(f"{where}: let in")
                    leaked = [s for s in SECRETS[home] if s in response.text]
                    if leaked:
                        violations.append(f"{where}: shows {leaked}")
    assert calls > 200
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations)


def test_the_same_credentials_work_at_their_own_school(district: District):
    """The cross-school run is not vacuous: at A's host A's admin and agent are let in."""
    a, b = district.schools["school-a"], district.schools["school-b"]
    cookie, _csrf = a.cookies["admin"]
    with district.client("school-a") as client:
        incidents = client.get("/api/v1/incidents", headers={"Cookie": cookie})
        assert incidents.status_code == 200
        assert SECRETS["school-a"][0] in incidents.text and SECRETS["school-b"][0] not in incidents.text
        assert (
            client.get("/api/v1/policy", headers={"Authorization": f"Bearer {a.agent_token}"}).status_code
            == 200
        )
    with district.client("school-b") as client:
        own = client.get("/api/v1/incidents", headers={"Cookie": b.cookies["admin"][0]})
        assert SECRETS["school-b"][0] in own.text and SECRETS["school-a"][0] not in own.text


def test_a_person_of_one_school_cannot_log_in_at_another(district: District):
    for slug, other in (("school-a", "school-b"), ("school-b", "school-a")):
        with district.client(other) as client:
            r = client.post("/api/v1/login", json={"username": f"admin-{slug}", "password": PASSWORD})
            assert r.status_code == 401, r.text
            page = client.post(
                "/login", data={"username": f"admin-{slug}", "password": PASSWORD}, follow_redirects=False
            )
            assert page.status_code != 303 or "/login" in page.headers.get("location", "")
            assert "kalkan_session" not in page.headers.get("set-cookie", "")
        with district.client(slug) as client:
            assert (
                client.post(
                    "/api/v1/login", json={"username": f"admin-{slug}", "password": PASSWORD}
                ).status_code
                == 200
            )


def test_an_agent_of_one_school_cannot_post_into_another(district: District):
    from sqlalchemy import func, select

    from policy_server.db.models import Event

    a, b = district.schools["school-a"], district.schools["school-b"]
    event = protocol.make_event("web.report", {"url": "http://x.example/", "comment": "x"})
    with district.client("school-b") as client:
        r = client.post(
            "/api/v1/events",
            json={"events": [event.model_dump(mode="json")]},
            headers={"Authorization": f"Bearer {a.agent_token}"},
        )
        assert r.status_code == 401, r.text
    with b.db() as db:
        assert db.scalar(select(func.count()).select_from(Event).where(Event.id == str(event.id))) == 0
        assert db.scalar(select(func.count()).select_from(Event).where(Event.agent_id == a.agent_id)) == 0
    with district.client("school-a") as client:
        r = client.post(
            "/api/v1/events",
            json={"events": [event.model_dump(mode="json")]},
            headers={"Authorization": f"Bearer {a.agent_token}"},
        )
        assert r.json()["accepted"] == [str(event.id)]


def _versions(lines) -> list[int]:
    import json

    return [json.loads(line[5:])["version"] for line in lines if line.startswith("data:")]


def test_a_policy_push_reaches_only_its_schools_agents(district: District):
    import threading

    from policy_server.policies.service import amend_policy, current_bundle

    a, b = district.schools["school-a"], district.schools["school-b"]
    with a.db() as db:
        before_a = current_bundle(db).version
    with b.db() as db:
        before_b = current_bundle(db).version
    heard: dict[str, list[str]] = {"school-a": [], "school-b": []}

    def listen(school: School) -> None:
        try:
            with (
                district.client(school.slug) as client,
                client.stream(
                    "GET",
                    "/api/v1/policy/stream",
                    headers={"Authorization": f"Bearer {school.agent_token}"},
                    timeout=httpx.Timeout(6, read=6),
                ) as stream,
            ):
                for line in stream.iter_lines():
                    heard[school.slug].append(line)
        except httpx.ReadTimeout:
            pass

    threads = [threading.Thread(target=listen, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    time.sleep(1.5)

    def change(bundle):
        bundle.school = "only school A changed"
        return bundle

    with a.db() as db:
        version = amend_policy(db, actor="test", comment="only school A", change=change).version
        db.commit()
    for t in threads:
        t.join(15)
    assert version == before_a + 1
    assert version in _versions(heard["school-a"])  # pushed to A's agent (LISTEN/NOTIFY in A's database)
    assert "retry: 2000" in heard["school-b"]  # B's agent was connected all along…
    assert set(_versions(heard["school-b"])) <= {before_b}  # …and heard at most its own version on connect
    with district.client("school-b") as client:
        got = client.get("/api/v1/policy", headers={"Authorization": f"Bearer {b.agent_token}"}).json()
        assert got["version"] == before_b


def test_the_periodic_jobs_run_per_school(district: District):
    """Each school's scheduled backup: in its own folder, of its own database."""
    found: dict[str, list[Path]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = {slug: sorted((district.root / "backups" / slug).glob("*")) for slug in HOSTS}
        if all(any(not p.name.endswith(".partial") for p in files) for files in found.values()):
            break
        time.sleep(0.5)
    assert all(found.values()), (district.root / "server.log").read_text()[-3000:]
    assert not list((district.root / "backups").glob("kalkan*"))  # nothing of any school outside its folder
    from policy_server.db.backup import _pg_tool

    for slug, files in found.items():
        listing = subprocess.run(
            [_pg_tool("pg_restore"), "--list", str(files[-1])], capture_output=True, text=True
        )
        dbname = next(line for line in listing.stdout.splitlines() if "dbname:" in line)
        assert dbname.split()[-1] == "kalkan_" + slug.replace("-", "_")


def test_an_unknown_host_is_told_so_and_named_no_school(district: District):
    with district.client(None) as client:
        r = client.get("/healthz")
        assert r.status_code == 404 and r.json()["code"] == "schools.unknown_host"
        assert not any(s in r.text for secrets in SECRETS.values() for s in secrets)
        ru = client.get("/healthz", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
        assert ru.status_code == 404 and ru.json()["detail"].startswith("По этому адресу не обслуживается")
        assert (
            client.post(
                "/api/v1/login", json={"username": "admin-school-a", "password": PASSWORD}
            ).status_code
            == 404
        )


def test_a_school_added_while_the_service_runs_is_served_without_a_restart(district: District):
    """`schools add` while the service runs (two workers, PostgreSQL): its host is served from the
    first requests on, by every worker (each looks at schools.json on its own), its admin logs in,
    A's people are strangers there, and its periodic jobs run (its scheduled backup, of its own
    database): its lifespan was started like the others'."""
    _cli("schools", "add", "school-c", "--name", "Lyceum C", "--host", "c.district.test", "--admin",
         "admin-school-c", "--password-stdin", root=district.root, service_db=district.service_db,
         stdin=PASSWORD + "\n")
    served = 0
    deadline = time.monotonic() + 30
    while served < 8:  # eight in a row, each on a new connection: both workers answer for C
        with httpx.Client(base_url=district.url, headers={"Host": "c.district.test"}, timeout=40) as client:
            status = client.get("/healthz").status_code
        served = served + 1 if status == 200 else 0
        assert time.monotonic() < deadline, (district.root / "server.log").read_text()[-3000:]
    with httpx.Client(base_url=district.url, headers={"Host": "c.district.test"}, timeout=10) as client:
        ok = client.post("/api/v1/login", json={"username": "admin-school-c", "password": PASSWORD})
        assert ok.status_code == 200, ok.text
        stranger = client.post("/api/v1/login", json={"username": "admin-school-a", "password": PASSWORD})
        assert stranger.status_code == 401
    with district.client("school-a") as client:  # and A still is A
        assert client.post("/api/v1/login", json={"username": "admin-school-c", "password": PASSWORD}
                           ).status_code == 401
    deadline = time.monotonic() + 60
    backups = district.root / "backups" / "school-c"
    while not [p for p in backups.glob("*") if not p.name.endswith(".partial")]:
        assert time.monotonic() < deadline, (district.root / "server.log").read_text()[-3000:]
        time.sleep(0.5)


def test_a_school_added_in_one_process_is_served_at_its_first_request(tmp_path):
    """In-process, SQLite, one process: a school added while the service runs is served from the
    first request for its host (no wait for the next look at the registry), its lifespan runs and
    stops with the service's; a registry written wrong by hand, or a school claiming a host that is
    another's, leaves every school served as before."""
    import asyncio
    import json

    from policy_server.tenancy import dispatch
    from policy_server.tenancy.schools import add_school, registry_path

    settings = Settings(state_dir=tmp_path / "svc", tls=False)
    add_school(settings, slug="first", name="First", hosts=["first.test"])
    service = dispatch.SchoolsService(settings)
    dispatch.REGISTRY_CHECK_S = 600.0  # (this module's value for this test: only a request looks)

    async def scenario() -> None:
        inbox: asyncio.Queue = asyncio.Queue()
        outbox: asyncio.Queue = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(service({"type": "lifespan"}, inbox.get, outbox.put))
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url="http://second.test") as second:
            assert (await second.get("/healthz")).status_code == 404  # not a school yet
            await asyncio.to_thread(add_school, settings, slug="second", name="Second", hosts=["second.test"])
            r = await second.get("/healthz")
            assert r.status_code == 200, r.text
        app = service.app_for("second.test")
        assert app is service.apps["second"] and app is not service.apps["first"]
        assert app.state.lesson_ticker._task is not None  # its lifespan runs
        path = registry_path(settings)
        good = path.read_text()
        entries = json.loads(good)["schools"]
        path.write_text(json.dumps({"schools": [*entries, {**entries[0], "slug": "third"}]}))  # first's host
        path.write_text(path.read_text() + "{")  # and then broken by hand
        async with httpx.AsyncClient(transport=transport, base_url="http://third.test") as third:
            assert (await third.get("/healthz")).status_code == 404
        async with httpx.AsyncClient(transport=transport, base_url="http://first.test") as first:
            assert (await first.get("/healthz")).status_code == 200
        assert set(service.apps) == {"first", "second"}
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await lifespan
        assert app.state.lesson_ticker._task is None  # stopped with the others

    try:
        asyncio.run(scenario())
    finally:
        dispatch.REGISTRY_CHECK_S = 2.0


def test_a_policy_change_in_one_school_is_told_to_its_own_hub_only(tmp_path):
    """One process serving two schools (a service on SQLite runs as one): the commit of school A's
    new policy version reaches A's push hub and not B's.  Told to B's hub, B's agents would be
    sent a push for nothing and, worse, B's hub would ignore B's own next versions up to A's
    number (it keeps only what is newer than the newest it heard)."""
    import asyncio

    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.policies.push import PushHub
    from policy_server.policies.service import amend_policy, current_bundle
    from policy_server.tenancy.schools import add_school, school_settings

    service = Settings(state_dir=tmp_path / "svc", tls=False)
    makers = {}
    for slug in ("school-a", "school-b"):
        entry = add_school(service, slug=slug, name=slug, hosts=[f"{slug}.district.test"])
        makers[slug] = make_sessionmaker(make_engine(school_settings(service, entry).database_url))

    def amend(slug: str, times: int = 1) -> int:
        with makers[slug]() as db:
            for n in range(times):
                amend_policy(db, actor="test", comment=f"{slug} {n}", change=lambda bundle: bundle)
                db.commit()
            return current_bundle(db).version

    amend("school-b", 1)
    amend("school-a", 4)  # A a few versions ahead of B

    async def scenario() -> None:
        hubs = {slug: PushHub() for slug in makers}
        for slug, hub in hubs.items():
            await hub.start(makers[slug])
        b_before = hubs["school-b"].latest.version
        queues = {slug: hub.subscribe(f"agent-of-{slug}") for slug, hub in hubs.items()}
        try:
            a_version = await asyncio.to_thread(amend, "school-a")
            assert a_version > b_before + 1
            heard = await asyncio.wait_for(queues["school-a"].get(), 10)
            assert heard.version == a_version  # A's hub heard A's commit at once
            await asyncio.sleep(0.5)
            assert queues["school-b"].empty() and hubs["school-b"].latest.version == b_before
            b_version = await asyncio.to_thread(amend, "school-b")  # and B's own next version…
            assert (await asyncio.wait_for(queues["school-b"].get(), 10)).version == b_version  # …is pushed
        finally:
            for hub in hubs.values():
                await hub.stop()

    asyncio.run(scenario())
    for maker in makers.values():
        maker.kw["bind"].dispose()


def test_a_single_school_ignores_the_host_name(tmp_path):
    """Today's install (no schools.json), SQLite, a real process: any host name, one school."""
    with KalkanServerProcess(tmp_path / "single", tls=False) as server:
        for host in ("127.0.0.1", "a.district.test", "anything.example"):
            r = httpx.get(server.url + "/healthz", headers={"Host": host}, timeout=10)
            assert r.status_code == 200 and r.json()["database"]["dialect"] == "sqlite"
        assert not (tmp_path / "single" / "schools.json").exists()


def test_the_schools_registry_refuses_what_would_mix_schools(tmp_path):
    """In-process, SQLite: a host name serves one school, names are checked, errors say the fix."""
    from policy_server.errors import Conflict, InvalidInput, NotFound
    from policy_server.tenancy.schools import add_school, find, is_multi_school, load, school_settings

    service = Settings(state_dir=tmp_path / "svc", tls=False, backup_dir=str(tmp_path / "backups"))
    assert not is_multi_school(service)
    entry = add_school(service, slug="school-1", name="One",
                       hosts=["One.District.Test:8443", "one.district.test"])
    assert entry.hosts == ("one.district.test",) and is_multi_school(service)
    assert oct((tmp_path / "svc" / "schools.json").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(Conflict) as taken:
        add_school(service, slug="school-2", name="Two", hosts=["one.district.test"])
    assert taken.value.code == "schools.host_taken" and "school-1" in str(taken.value)
    assert "школе school-1" in taken.value.in_language("ru")
    for slug, code in (("School 2", "schools.bad_slug"), ("-x", "schools.bad_slug")):
        with pytest.raises(InvalidInput) as bad:
            add_school(service, slug=slug, name="x", hosts=["two.district.test"])
        assert bad.value.code == code
    with pytest.raises(InvalidInput) as bad_host:
        add_school(service, slug="school-2", name="x", hosts=["two_district test"])
    assert bad_host.value.code == "schools.bad_host"
    with pytest.raises(Conflict):
        add_school(service, slug="school-1", name="again", hosts=["other.district.test"])
    with pytest.raises(NotFound) as unknown:
        find(service, "school-9")
    assert "school-1" in str(unknown.value)
    assert [e.slug for e in load(service)] == ["school-1"]  # nothing half-stored by the refusals
    settings = school_settings(service, entry)
    assert settings.state_dir == tmp_path / "svc" / "schools" / "school-1"
    assert settings.cert_path == service.cert_path  # one certificate for the service
    assert settings.backup_dir == str(tmp_path / "backups" / "school-1")
    assert settings.database_url.endswith("schools/school-1/kalkan.sqlite")


def test_commands_work_on_one_school_with_the_school_option(tmp_path):
    """`create-user --school` writes into that school's database only; `schools list --json`."""
    import json

    from policy_server.people.service import get_person_by_username
    from policy_server.tenancy.schools import add_school, load, school_settings

    service = Settings(state_dir=tmp_path / "svc", tls=False)
    for slug in ("school-1", "school-2"):
        add_school(service, slug=slug, name=slug, hosts=[f"{slug}.district.test"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "KALKAN_STATE_DIR": str(tmp_path / "svc")}
    env.pop("KALKAN_DB_URL", None)
    made = subprocess.run([sys.executable, "-m", "policy_server.cli", "create-user", "--school", "school-2",
                           "--role", "teacher", "--username", "aigul", "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True, cwd=REPO, env=env)
    assert made.returncode == 0, made.stderr
    from policy_server.db.session import make_engine, make_sessionmaker

    found = {}
    for entry in load(service):
        engine = make_engine(school_settings(service, entry).database_url)
        with make_sessionmaker(engine)() as db:
            found[entry.slug] = get_person_by_username(db, "aigul") is not None
        engine.dispose()
    assert found == {"school-1": False, "school-2": True}
    listed = subprocess.run([sys.executable, "-m", "policy_server.cli", "schools", "list", "--json"],
                            capture_output=True, text=True, cwd=REPO, env=env)
    assert [s["slug"] for s in json.loads(listed.stdout)] == ["school-1", "school-2"]
    assert "db_url" not in listed.stdout
    unknown = subprocess.run([sys.executable, "-m", "policy_server.cli", "--lang", "ky", "create-user",
                              "--school", "nope", "--role", "admin", "--username", "x", "--password-stdin"],
                             input=PASSWORD + "\n", capture_output=True, text=True, cwd=REPO, env=env)
    assert unknown.returncode == 2 and "school-1" in unknown.stderr and "мектеби жок" in unknown.stderr



def test_a_school_database_that_cannot_be_made_is_said_plainly(postgres_cluster, tmp_path):
    """A service user without CREATEDB: a clear error with the fix, nothing registered."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from policy_server.errors import KalkanError
    from policy_server.tenancy.schools import add_school, is_multi_school

    url = postgres_cluster.create_database()
    role = f"weak_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN NOCREATEDB"))
    engine.dispose()
    service = Settings(state_dir=tmp_path / "svc", db_url=make_url(url).set(username=role).render_as_string(
        hide_password=False), tls=False)
    with pytest.raises(KalkanError) as refused:
        add_school(service, slug="school-1", name="One", hosts=["one.district.test"])
    assert refused.value.code == "schools.cannot_create_database"
    assert "CREATEDB" in str(refused.value) and "--school-db" in str(refused.value)
    assert "CREATEDB" in refused.value.in_language("ky")
    assert not is_multi_school(service)


# ---------------------------------------------------------------- schools removed, hosts changed live


def _schools_cli(*args: str, district: District, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "policy_server.cli", *args, "--state-dir",
                           str(district.root / "service"), "--db", district.service_db],
                          input=stdin, capture_output=True, text=True, cwd=REPO, env=env)


def _add_live_school(district: District, slug: str, *hosts: str) -> tuple[str, str]:
    """A school added to the running service (admin `admin-<slug>`), served at its first host,
    with one enrolled agent; returns (its database URL, the agent's token)."""
    from policy_server.agents.service import create_enrollment_code, parse_expiry
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.tenancy.schools import load

    host_options = [option for host in hosts for option in ("--host", host)]
    _cli("schools", "add", slug, *host_options, "--admin", f"admin-{slug}", "--password-stdin",
         root=district.root, service_db=district.service_db, stdin=PASSWORD + "\n")
    service = Settings(state_dir=district.root / "service", db_url=district.service_db)
    db_url = next(e.db_url for e in load(service) if e.slug == slug)
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as db:
        code = create_enrollment_code(db, actor="test", uses=1, expires_at=parse_expiry("1d"))
        db.commit()
    engine.dispose()
    _wait_for_status(district, hosts[0], 200)
    with httpx.Client(base_url=district.url, headers={"Host": hosts[0]}, timeout=10) as client:
        r = client.post("/api/v1/enroll", json={"code": code, "hostname": f"pc-{slug}", "seat": "s-01"})
        assert r.status_code == 200, r.text
    return db_url, r.json()["token"]


def _wait_for_status(district: District | None, host: str, status: int, *, within: float = 20,
                     url: str = "", log: Path | None = None) -> None:
    """`status` eight times in a row, each on a new connection (so from both workers)."""
    in_a_row, deadline = 0, time.monotonic() + within
    while in_a_row < 8:
        with httpx.Client(base_url=url or district.url, headers={"Host": host}, timeout=40) as client:
            got = client.get("/healthz").status_code
        in_a_row = in_a_row + 1 if got == status else 0
        assert time.monotonic() < deadline, f"{host}: {got}, not {status}\n" + (
            log or district.root / "server.log").read_text()[-3000:]


class _Stream:
    """An agent's push stream read on a thread, until `until(lines)` or the server ends it."""

    def __init__(self, district: District | str, host: str, token: str, until=lambda lines: False) -> None:
        import threading

        self.lines: list[str] = []
        self.ended_by_server = False
        self._until = until
        url = district if isinstance(district, str) else district.url
        self._thread = threading.Thread(target=self._read, args=(url, host, token), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while "retry: 2000" not in self.lines:
            assert self._thread.is_alive() and time.monotonic() < deadline, self.lines
            time.sleep(0.05)

    def _read(self, url: str, host: str, token: str) -> None:
        timeout = httpx.Timeout(10, read=40)
        with (httpx.Client(base_url=url, headers={"Host": host}, timeout=timeout) as client,
              client.stream("GET", "/api/v1/policy/stream", headers={"Authorization": f"Bearer {token}"})
              as stream):
            for line in stream.iter_lines():
                self.lines.append(line)
                if self._until(self.lines):
                    return
        self.ended_by_server = True

    def join(self, within: float) -> bool:
        self._thread.join(within)
        return not self._thread.is_alive()


def test_a_school_removed_while_the_service_runs_is_stopped_at_once(district: District):
    """`schools remove --yes --drop-database` while the service runs (two workers, PostgreSQL):
    the school's agent's push stream is ended, its host 404s within a few seconds on every worker,
    and the database is dropped once the service let go of it — while school A's requests, sent
    all along, keep succeeding."""
    import threading

    from sqlalchemy import create_engine, text

    db_url, token = _add_live_school(district, "school-d", "d.district.test")
    stream = _Stream(district, "d.district.test", token)
    a = district.schools["school-a"]
    a_answers: list[int] = []
    done = threading.Event()

    def keep_asking() -> None:  # A's agent asks for its policy, one new connection each time
        while not done.is_set():
            with district.client("school-a") as client:
                a_answers.append(client.get("/api/v1/policy", headers={
                    "Authorization": f"Bearer {a.agent_token}"}).status_code)

    asking = threading.Thread(target=keep_asking, daemon=True)
    asking.start()
    try:
        refused = _schools_cli("schools", "remove", "school-d", district=district)
        assert refused.returncode == 2 and "--yes" in refused.stderr
        assert "Removing the school" in refused.stdout
        removed = _schools_cli("schools", "remove", "school-d", "--yes", "--drop-database", district=district,
                               stdin="school-d\n")
        assert removed.returncode == 0, removed.stderr
        assert "backup --school school-d" in removed.stdout and "dropped its database" in removed.stdout
        assert stream.join(10) and stream.ended_by_server  # ended by the server, not timed out
        _wait_for_status(district, "d.district.test", 404, within=10)
        with httpx.Client(base_url=district.url, headers={"Host": "d.district.test"}, timeout=10) as client:
            again = client.get("/api/v1/policy/stream", headers={"Authorization": f"Bearer {token}"})
            assert again.status_code == 404 and again.json()["code"] == "schools.unknown_host"
    finally:
        done.set()
        asking.join(15)
    assert len(a_answers) > 10 and set(a_answers) == {200}, a_answers
    engine = create_engine(district.service_db)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM pg_database WHERE datname = 'kalkan_school_d'")
                                  ).scalar() == 0
    engine.dispose()
    trail = (district.root / "service" / "schools-audit.log").read_text()
    assert '"action": "school.remove", "school": "school-d"' in trail and "school.drop_database" in trail


def test_a_schools_hosts_changed_while_the_service_runs_are_rerouted(district: District):
    """`schools hosts` while the service runs (two workers, PostgreSQL): the new host answers for
    the school, the host taken away 404s, and the school's app goes on as it was: a login session
    at the kept host still works and the push stream opened before the change stays open and
    carries the school's next policy version (its push hub was not restarted)."""
    from sqlalchemy import select

    from policy_server.db.models import AuditRecord
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.policies.service import amend_policy

    db_url, token = _add_live_school(district, "school-e", "e1.district.test", "e2.district.test")
    with httpx.Client(base_url=district.url, headers={"Host": "e1.district.test"}, timeout=10) as client:
        login = client.post("/api/v1/login", json={"username": "admin-school-e", "password": PASSWORD})
        assert login.status_code == 200, login.text
        cookies = dict(client.cookies)
    changed_policy = "school E, after its hosts changed"

    def heard_the_change(lines: list[str]) -> bool:
        return any(line.startswith("data:") and changed_policy in line for line in lines)

    stream = _Stream(district, "e1.district.test", token, until=heard_the_change)
    taken = _schools_cli("schools", "hosts", "school-e", "--host", "a.district.test", district=district)
    assert taken.returncode == 2 and "school-a" in taken.stderr
    changed = _schools_cli("schools", "hosts", "school-e", "--host", "e1.district.test", "--host",
                           "e3.district.test", district=district)
    assert changed.returncode == 0 and "e3.district.test" in changed.stdout, changed.stderr
    _wait_for_status(district, "e3.district.test", 200)
    _wait_for_status(district, "e2.district.test", 404)
    for _ in range(4):  # the session made before the change, at the kept host (either worker)
        with httpx.Client(base_url=district.url, headers={"Host": "e1.district.test"}, cookies=cookies,
                          timeout=10) as client:
            assert client.get("/api/v1/me").status_code == 200
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as db:
        def change(bundle):
            bundle.school = changed_policy
            return bundle

        amend_policy(db, actor="test", comment="after the hosts changed", change=change)
        db.commit()
        assert db.scalar(select(AuditRecord.detail).where(AuditRecord.action == "school.hosts")) == {
            "before": ["e1.district.test", "e2.district.test"],
            "after": ["e1.district.test", "e3.district.test"]}
    engine.dispose()
    assert stream.join(15) and not stream.ended_by_server, stream.lines  # the same stream heard it


def test_on_sqlite_a_school_removed_while_the_service_runs_ends_its_streams(tmp_path):
    """A real `kalkan-server run` on SQLite (one process): `remove_school` and its SQLite file
    dropped while an agent of the school holds its push stream: the stream is ended by the
    server, the school's host 404s, the other school is served all along."""
    from policy_server.agents.service import create_enrollment_code, parse_expiry
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.tenancy.schools import add_school, drop_school_database, remove_school, school_settings

    settings = Settings(state_dir=tmp_path / "svc", tls=False)
    add_school(settings, slug="school-1", name="One", hosts=["127.0.0.1"])  # (the process's start check)
    entry = add_school(settings, slug="school-2", name="Two", hosts=["two.district.test"])
    engine = make_engine(school_settings(settings, entry).database_url)
    with make_sessionmaker(engine)() as db:
        code = create_enrollment_code(db, actor="test", uses=1, expires_at=parse_expiry("1d"))
        db.commit()
    engine.dispose()
    with KalkanServerProcess(tmp_path / "svc", tls=False) as server:
        two = httpx.Client(base_url=server.url, headers={"Host": "two.district.test"}, timeout=10)
        with two:
            r = two.post("/api/v1/enroll", json={"code": code, "hostname": "pc-2", "seat": "s-01"})
            assert r.status_code == 200, r.text
        stream = _Stream(server.url, "two.district.test", r.json()["token"])
        remove_school(settings, slug="school-2", actor="test")
        drop_school_database(settings, entry, actor="test")
        assert stream.join(10) and stream.ended_by_server, server.log_text()
        log = tmp_path / "svc" / "server.log"
        _wait_for_status(None, "two.district.test", 404, within=10, url=server.url, log=log)
        _wait_for_status(None, "127.0.0.1", 200, url=server.url, log=log)
    assert not (tmp_path / "svc" / "schools" / "school-2" / "kalkan.sqlite").exists()


def test_in_one_process_a_school_removed_stops_and_new_hosts_keep_the_app(tmp_path):
    """In-process, SQLite, one process (a service on SQLite runs as one): a removed school's host
    404s, its push streams get the end, its ticker and push hub stop; another school's new host is
    served by the same app (not rebuilt, its ticker untouched), its old host 404s."""
    import asyncio

    from policy_server.policies import push
    from policy_server.tenancy import dispatch
    from policy_server.tenancy.schools import add_school, remove_school, set_hosts

    settings = Settings(state_dir=tmp_path / "svc", tls=False)
    for slug in ("first", "second", "third"):
        add_school(settings, slug=slug, name=slug, hosts=[f"{slug}.test"])
    service = dispatch.SchoolsService(settings)
    dispatch.REGISTRY_CHECK_S = 0.2

    async def status(host: str) -> int:
        transport = httpx.ASGITransport(app=service)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            return (await client.get("/healthz")).status_code

    async def scenario() -> None:
        inbox: asyncio.Queue = asyncio.Queue()
        outbox: asyncio.Queue = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(service({"type": "lifespan"}, inbox.get, outbox.put))
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        second, third = service.apps["second"], service.apps["third"]
        third_ticker = third.state.lesson_ticker._task
        queue = second.state.push_hub.subscribe("agent-of-second")
        await asyncio.to_thread(remove_school, settings, slug="second")
        await asyncio.to_thread(set_hosts, settings, slug="third", hosts=["third.test", "new.test"])
        assert await status("new.test") == 200  # a host no school had: looked at at once
        assert service.app_for("new.test") is third and service.apps["third"] is third
        assert await status("second.test") == 404 and "second" not in service.apps
        assert await asyncio.wait_for(queue.get(), 5) is push.CLOSE
        assert second.state.lesson_ticker._task is None and second.state.push_hub not in push._hubs
        assert third.state.lesson_ticker._task is third_ticker and third.state.push_hub in push._hubs
        assert third.state.settings.public_url == "http://third.test:8443"
        await asyncio.to_thread(set_hosts, settings, slug="third", hosts=["new.test"])
        for _ in range(50):
            if await status("third.test") == 404:
                break
            await asyncio.sleep(0.1)
        assert await status("third.test") == 404 and await status("new.test") == 200
        assert third.state.settings.public_url == "http://new.test:8443"  # the seat command's address
        assert await status("first.test") == 200
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await lifespan
        assert third.state.lesson_ticker._task is None

    try:
        asyncio.run(scenario())
    finally:
        dispatch.REGISTRY_CHECK_S = 2.0


def test_schools_remove_and_hosts_refuse_what_they_should(tmp_path, monkeypatch, capsys):
    """The commands (SQLite): remove says what it does and does nothing without --yes; an unknown
    school is named with the known ones; the database is kept unless --drop-database and the
    short name typed; the last school stays; hosts are checked as `schools add` checks them."""
    import io
    import json

    from policy_server import cli
    from policy_server.tenancy.schools import add_school, load, registry_path

    monkeypatch.delenv("KALKAN_DB_URL", raising=False)
    settings = Settings(state_dir=tmp_path / "svc", tls=False)
    for slug in ("school-1", "school-2", "school-3"):
        add_school(settings, slug=slug, name=slug, hosts=[f"{slug}.district.test"])
    database = tmp_path / "svc" / "schools" / "school-2" / "kalkan.sqlite"

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main([*args[:1], "schools", *args[1:], "--state-dir", str(tmp_path / "svc")])
        out = capsys.readouterr()
        return code, out.out, out.err

    def slugs() -> list[str]:
        return [e.slug for e in load(settings)]

    code, out, err = run("--lang=en", "remove", "school-2")
    assert code == 2 and "nothing was removed" in err.lower() and "--yes" in err
    assert "404" in out and "school-2.district.test" in out and "are kept" in out
    code, _, err = run("--lang=ru", "remove", "school-9", "--yes")
    assert code == 2 and "нет школы school-9" in err and "school-1, school-2, school-3" in err
    code, out, err = run("--lang=ky", "remove", "school-2", "--yes", "--drop-database", stdin="school-1\n")
    assert code == 2 and "Эч нерсе өчүрүлгөн жок" in err and "backup --school school-2" in out
    assert slugs() == ["school-1", "school-2", "school-3"] and database.exists()
    code, out, _ = run("--lang=en", "remove", "school-2", "--yes")
    assert code == 0 and "removed the school school-2" in out
    assert slugs() == ["school-1", "school-3"] and database.exists()  # kept
    assert oct(registry_path(settings).stat().st_mode & 0o777) == "0o600"
    code, _, _ = run("--lang=en", "remove", "school-3", "--yes", "--drop-database", stdin="school-3\n")
    assert code == 0 and not (tmp_path / "svc" / "schools" / "school-3" / "kalkan.sqlite").exists()
    code, _, err = run("--lang=en", "remove", "school-1", "--yes")
    assert code == 2 and "only school" in err and slugs() == ["school-1"]
    add_school(settings, slug="school-4", name="4", hosts=["school-4.district.test"])
    code, _, err = run("--lang=en", "hosts", "school-4", "--host", "School-1.district.test")
    assert code == 2 and "belongs to the school 'school-1'" in err
    code, _, err = run("--lang=ru", "hosts", "school-4", "--host", "bad host")
    assert code == 2 and "не имя хоста" in err
    code, _, err = run("--lang=en", "hosts", "school-9", "--host", "x.district.test")
    assert code == 2 and "school-1, school-4" in err
    assert [e.hosts for e in load(settings)] == [("school-1.district.test",), ("school-4.district.test",)]
    code, out, _ = run("--lang=en", "hosts", "school-4", "--host", "four.district.test", "--host",
                       "school-4.district.test")
    assert code == 0 and "four.district.test, school-4.district.test" in out
    assert load(settings)[1].hosts == ("four.district.test", "school-4.district.test")
    import fcntl
    import threading

    from policy_server.tenancy.schools import set_hosts

    with open(tmp_path / "svc" / "schools.json.lock", "w") as held:  # another command is changing it
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = threading.Thread(target=set_hosts, args=(settings,),
                                   kwargs={"slug": "school-1", "hosts": ["one.district.test"]})
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and load(settings)[0].hosts == ("school-1.district.test",)
    waiting.join(10)
    assert load(settings)[0].hosts == ("one.district.test",)
    trail = [json.loads(line) for line in (tmp_path / "svc" / "schools-audit.log").read_text().splitlines()]
    assert [(t["action"], t["school"]) for t in trail][3:] == [
        ("school.remove", "school-2"), ("school.remove", "school-3"), ("school.drop_database", "school-3"),
        ("school.add", "school-4"), ("school.hosts", "school-4"), ("school.hosts", "school-1")]
