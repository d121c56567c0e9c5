"""Login throttling (docs/security.md "Login protection"): per account and per address,
growing waits, a temporary lock that refuses even the right password, every attempt in the
audit log, and an incident for the responsible person on a burst."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import select

from policy_server.db.models import AuditRecord, Incident, Notification
from policy_server.security.throttle import LoginThrottle
from tests.support.server import KalkanServerProcess

PASSWORD = "right-password-42"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with KalkanServerProcess(tmp_path_factory.mktemp("throttle"), tls=False) as running:
        yield running


def _audit(server: KalkanServerProcess, target: str) -> list[AuditRecord]:
    with server.db() as db:
        return list(db.scalars(select(AuditRecord).where(AuditRecord.target == target,
                                                         AuditRecord.action.like("person.login%"))
                               .order_by(AuditRecord.id)))


def test_the_21st_wrong_password_within_a_minute_is_refused_and_the_right_one_too(server):
    server.create_user("teacher", "guessed", PASSWORD)
    answers = []
    started = time.monotonic()
    with server.client() as client:
        for _ in range(21):
            answers.append(client.post("/api/v1/login",
                                       json={"username": "guessed", "password": "wrong-guess"}))
        right = client.post("/api/v1/login", json={"username": "guessed", "password": PASSWORD})
        in_russian = client.post("/api/v1/login", json={"username": "guessed", "password": PASSWORD},
                                 headers={"Accept-Language": "ru"})
    assert time.monotonic() - started < 60  # all inside one minute
    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [401] * 5  # five tries, then the account waits
    assert statuses[5:] == [429] * 16
    assert 1 <= int(answers[20].headers["retry-after"]) <= 60
    assert answers[20].json()["code"] == "auth.throttled" and "wait" in answers[20].json()["detail"]
    # locked: guessing right now gains nothing
    assert right.status_code == 429 and "kalkan_session" not in right.cookies
    assert in_russian.json()["detail"].startswith("Слишком много неудачных попыток входа")

    records = _audit(server, "guessed")
    actions = [r.action for r in records]
    assert actions.count("person.login_failed") == 5
    assert actions.count("person.login_refused") == 18
    assert "person.login" not in actions
    assert all(r.detail["address"] == "127.0.0.1" for r in records)
    assert {r.detail["why"] for r in records if r.action == "person.login_failed"} == {"wrong_password"}

    # a burst (10 unsuccessful attempts) told the responsible person, once
    with server.db() as db:
        bursts = list(db.scalars(select(Incident).where(Incident.rule == "auth.login_burst")))
        account = [i for i in bursts if i.params["kind"] == "account" and i.params["account"] == "guessed"]
        assert len(account) == 1 and account[0].severity == "high"
        told = db.scalar(select(Notification.role).where(Notification.incident_id == account[0].id))
        assert told == "admin"


def test_the_page_login_says_how_long_to_wait_in_the_readers_language(server):
    server.create_user("director", "page-guessed", PASSWORD)
    with server.client() as client:
        status = []
        for _ in range(6):
            form = client.get("/login", headers={"Accept-Language": "ru"})
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
            answer = client.post("/login", headers={"Accept-Language": "ru"},
                                 data={"username": "page-guessed", "password": "nope", "csrf_token": token,
                                       "next": "/incidents"})
            status.append(answer.status_code)
    assert status == [401] * 5 + [429]
    assert "Слишком много неудачных попыток входа" in answer.text and answer.headers["retry-after"]
    assert [r.detail["via"] for r in _audit(server, "page-guessed")] == ["page"] * 6


def test_unknown_accounts_are_counted_too(server):
    with server.client() as client:
        body = {"username": "nobody-here", "password": "x"}
        statuses = [client.post("/api/v1/login", json=body).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert _audit(server, "nobody-here")[0].detail["why"] == "unknown_account"


@pytest.fixture
def db(db_url: str):
    """A migrated database (SQLite and PostgreSQL): the counts live in `login_attempts`."""
    from policy_server.db.migrate import upgrade
    from policy_server.db.session import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    upgrade(engine)
    with make_sessionmaker(engine)() as session:
        yield session
    engine.dispose()


def test_waits_grow_and_end_and_a_success_clears_the_account(db):
    throttle = LoginThrottle(account_limits="2/1 second;3/3 seconds", address_limits="100/minute")
    for _ in range(2):
        throttle.failed(username="a", address="10.0.0.1", db=db)
    db.commit()
    first = throttle.check(username="a", address="10.0.0.1", db=db)
    assert first is not None and first.reason == "account" and first.retry_after == 1
    time.sleep(1.1)
    assert throttle.check(username="a", address="10.0.0.1", db=db) is None  # the short wait is over
    throttle.failed(username="a", address="10.0.0.1", db=db)
    longer = throttle.check(username="a", address="10.0.0.1", db=db)
    assert longer is not None and longer.retry_after >= 2  # the next step waits longer
    throttle.succeeded(username="a", db=db)
    assert throttle.check(username="a", address="10.0.0.1", db=db) is None
    assert throttle.check(username="B", address="10.0.0.2", db=db) is None  # others are not affected
    db.commit()


def test_one_address_is_limited_across_accounts(db):
    throttle = LoginThrottle(account_limits="100/minute", address_limits="3/minute")
    for name in ("a", "b", "c"):
        throttle.failed(username=name, address="10.0.0.9", db=db)
    refused = throttle.check(username="d", address="10.0.0.9", db=db)
    assert refused is not None and refused.reason == "address"
    assert throttle.check(username="d", address="10.0.0.10", db=db) is None


def test_a_window_never_takes_more_entries_than_its_limit(db):
    """The storage refuses the entry past the limit (the moving window of the `limits` library)."""
    from policy_server.db.models import Base  # noqa: F401  (models registered)
    from policy_server.security.models import LoginAttempt

    throttle = LoginThrottle(account_limits="3/minute", address_limits="100/minute")
    for _ in range(5):
        throttle.failed(username="capped", address="10.0.0.3", db=db)
    db.commit()
    keys = list(db.scalars(select(LoginAttempt.key).where(LoginAttempt.key.like("%account:capped%"))))
    assert len(keys) == 3


def test_the_memory_storage_can_still_be_named():
    throttle = LoginThrottle(account_limits="1/minute", address_limits="100/minute", storage_uri="memory://")
    throttle.failed(username="m", address="10.0.0.4")
    assert throttle.check(username="m", address="10.0.0.4") is not None


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_server_processes_on_one_database_share_the_count(database, tmp_path, request):
    """Two real server processes on one database: 20 wrong passwords spread over both, then the
    21st waits whichever process gets it; the audit log has every attempt."""
    url = (f"sqlite:///{tmp_path / 'shared.sqlite'}" if database == "sqlite"
           else request.getfixturevalue("postgres_cluster").create_database())
    env = {"KALKAN_LOGIN_ACCOUNT_LIMITS": "20/minute", "KALKAN_LOGIN_ADDRESS_LIMITS": "100/minute"}
    with KalkanServerProcess(tmp_path / "one", url, tls=False, env=env) as one, \
            KalkanServerProcess(tmp_path / "two", url, tls=False, env=env) as two:
        one.create_user("teacher", "shared", PASSWORD)
        started = time.monotonic()
        with one.client() as a, two.client() as b:
            wrong = {"username": "shared", "password": "wrong-guess"}
            answers = [(a if n % 2 else b).post("/api/v1/login", json=wrong).status_code for n in range(20)]
            twenty_first_on_one = a.post("/api/v1/login", json=wrong)
            twenty_first_on_two = b.post("/api/v1/login", json=wrong)
            right_on_two = b.post("/api/v1/login", json={"username": "shared", "password": PASSWORD})
        assert time.monotonic() - started < 60
        assert answers == [401] * 20  # each process alone has seen only 10
        for answer in (twenty_first_on_one, twenty_first_on_two, right_on_two):
            assert answer.status_code == 429 and 1 <= int(answer.headers["retry-after"]) <= 60
        records = _audit(one, "shared")
        assert [r.action for r in records] == ["person.login_failed"] * 20 + ["person.login_refused"] * 3
        assert all(r.detail["address"] == "127.0.0.1" for r in records)
