"""Login throttling (OWASP ASVS V2.2): per account and per address, growing waits, a
temporary lock, every failure in the audit log, a notice to the responsible person on a burst.

Counting is done by the `limits` library (moving windows).  Each rule is a ladder of limits,
so the wait grows with the number of failures:

* an account: 5 failures in a minute -> wait until the minute has passed; 10 in 10 minutes ->
  up to 10 minutes; 20 in an hour -> locked for up to an hour (the right password is refused
  too while it lasts, so guessing gains nothing);
* an address: 20 failures a minute, 100 an hour (a school's staff share few addresses).

A refused attempt is answered before the password is checked (429 with `Retry-After`) and
recorded as `person.login_refused`; a wrong password as `person.login_failed` (both with the
address).  When an account or an address reaches its burst mark (10 unsuccessful attempts in 10
minutes for an account, 30 from one address) an incident `auth.login_burst` tells the
responsible person (one per account or address and hour).  A successful login clears the account's count.

The counts live in the database (table `login_attempts`, one row per entry of a `limits`
moving window; `DatabaseStorage` below), so every server process — uvicorn workers, replicas
behind one address, on SQLite or PostgreSQL — shares them: the 21st wrong password in a minute
waits whichever process gets it.  The entries are written in the login's own transaction (a
refusal or failure is committed together with its audit record), and an entry is taken under
a per-key lock (SQLite: the write lock every transaction takes; PostgreSQL: a transaction-level
advisory lock), so two processes cannot both take the last free entry of a window.  Another
`limits` storage can still be named with `KALKAN_LOGIN_LIMIT_STORAGE` (e.g. `memory://` for
one process).  See docs/security.md.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse, parse_many
from limits.storage import MovingWindowSupport, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import Person
from policy_server.errors import KalkanError, register_error_texts
from policy_server.security.models import LoginAttempt
from policy_server.web.i18n import N_

log = logging.getLogger("kalkan.security")

ACCOUNT_LIMITS = "5/minute;10/10 minutes;20/hour"
ADDRESS_LIMITS = "20/minute;100/hour"
# Attempts (failed or refused) that make a burst: tell the responsible person, once per window.
ACCOUNT_BURST = "10/10 minutes"
ADDRESS_BURST = "30/10 minutes"
BURST_CLAUSES = ("000 §3.2", "000 §5.5")


# Texts of this domain (translated in policy_server/security/locale, merged into the catalog).
TOO_MANY_PAGE = N_("Too many failed logins. Wait %(minutes)d min and try again, or ask the school's "
                   "responsible person.")
TOO_MANY_API = N_("Too many failed logins: wait %(seconds)s s and try again, or ask the school's "
                  "responsible person.")
LOGIN_BURST_TITLE = N_("Many failed logins (account %(account)s, address %(address)s)")
register_error_texts({"auth.throttled": TOO_MANY_API})


@dataclass(frozen=True)
class Refusal:
    """Too many failures: wait `retry_after` seconds (at least 1)."""

    retry_after: int
    reason: str  # "account" or "address"

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after / 60))


class TooManyLogins(KalkanError):
    """429 for the JSON login, with `Retry-After`, in the language the request asks for."""

    status_code = 429

    def __init__(self, refusal: Refusal):
        super().__init__(TOO_MANY_API % {"seconds": refusal.retry_after}, code="auth.throttled",
                         params={"seconds": refusal.retry_after})
        self.headers = {"Retry-After": str(refusal.retry_after)}


DATABASE = "database"  # the default storage: the `login_attempts` table, shared by every process
KEEP_S = 86400  # entries of keys nobody uses any more are pruned after a day


class DatabaseStorage(Storage, MovingWindowSupport):
    """A `limits` storage on the school's database, bound to one session (the login's own
    transaction), for the moving-window strategy.  A key is a limit's key (`limits` puts the
    limit's amount and period in it), so all entries of one key share one window length."""

    STORAGE_SCHEME = ["kalkan+database"]  # made by LoginThrottle with a session, not from a URI

    def __init__(self, db: Session) -> None:
        super().__init__()
        self.db = db

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def _lock(self, key: str) -> None:
        # SQLite: every transaction begins IMMEDIATE (policy_server/db/session.py) and so holds the
        # write lock already; PostgreSQL: an advisory lock on the key until the transaction ends.
        if self.db.get_bind().dialect.name == "postgresql":
            self.db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})

    def _count(self, key: str, since: float) -> int:
        return self.db.scalar(select(func.count()).select_from(LoginAttempt)
                              .where(LoginAttempt.key == key, LoginAttempt.at >= since)) or 0

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        self._lock(key)
        self.db.execute(delete(LoginAttempt).where(LoginAttempt.key == key, LoginAttempt.at < now - expiry))
        if self._count(key, now - expiry) + amount > limit:
            return False
        self.db.add_all([LoginAttempt(key=key, at=now) for _ in range(amount)])
        self.db.flush()
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        newest = select(LoginAttempt.at).where(LoginAttempt.key == key, LoginAttempt.at >= now - expiry) \
            .order_by(LoginAttempt.at.desc()).limit(limit).subquery()
        oldest, count = self.db.execute(select(func.min(newest.c.at), func.count()).select_from(newest)).one()
        return (oldest, count) if count else (now, 0)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:  # fixed-window API, unused
        now = time.time()
        self.db.add_all([LoginAttempt(key=key, at=now) for _ in range(amount)])
        self.db.flush()
        return self._count(key, now - expiry)

    def get(self, key: str) -> int:
        return self._count(key, 0)

    def get_expiry(self, key: str) -> float:
        return self.db.scalar(select(func.max(LoginAttempt.at)).where(LoginAttempt.key == key)) or time.time()

    def check(self) -> bool:
        return self.db.scalar(select(1)) == 1

    def reset(self) -> int | None:
        return self.db.execute(delete(LoginAttempt)).rowcount

    def clear(self, key: str) -> None:
        self.db.execute(delete(LoginAttempt).where(LoginAttempt.key == key))

    def prune(self) -> None:
        self.db.execute(delete(LoginAttempt).where(LoginAttempt.at < time.time() - KEEP_S))


class LoginThrottle:
    def __init__(self, *, account_limits: str = ACCOUNT_LIMITS, address_limits: str = ADDRESS_LIMITS,
                 storage_uri: str = DATABASE) -> None:
        self.storage_uri = storage_uri
        self._shared = (None if storage_uri == DATABASE
                        else MovingWindowRateLimiter(storage_from_string(storage_uri)))
        self.account: list[RateLimitItem] = parse_many(account_limits)
        self.address: list[RateLimitItem] = parse_many(address_limits)
        self.account_burst, self.address_burst = parse(ACCOUNT_BURST), parse(ADDRESS_BURST)
        self._pruned = 0.0

    def _limiter(self, db: Session | None) -> MovingWindowRateLimiter:
        if self._shared is not None:
            return self._shared
        if db is None:
            raise ValueError("the database login throttle needs the login's session")
        storage = DatabaseStorage(db)
        if time.monotonic() - self._pruned > 600:  # keys nobody uses any more: at most every 10 min
            self._pruned = time.monotonic()
            storage.prune()
        return MovingWindowRateLimiter(storage)

    @staticmethod
    def _account_key(username: str) -> str:
        return username.strip().lower()[:64]

    @staticmethod
    def _waits(limiter: MovingWindowRateLimiter, items: list[RateLimitItem], key: str) -> int | None:
        now = time.time()
        waits = []
        for item in items:
            if not limiter.test(item, "login", key):
                reset = limiter.get_window_stats(item, "login", key).reset_time
                waits.append(max(1, math.ceil(reset - now)))
        return max(waits) if waits else None

    def check(self, *, username: str, address: str, db: Session | None = None) -> Refusal | None:
        """None if this attempt may go ahead, else how long to wait."""
        limiter = self._limiter(db)
        wait = self._waits(limiter, self.account, "account:" + self._account_key(username))
        if wait is not None:
            return Refusal(wait, "account")
        wait = self._waits(limiter, self.address, "address:" + address)
        if wait is not None:
            return Refusal(wait, "address")
        return None

    def failed(self, *, username: str, address: str, db: Session | None = None) -> None:
        """Count a wrong password against the account and the address."""
        limiter = self._limiter(db)
        for item in self.account:
            limiter.hit(item, "login", "account:" + self._account_key(username))
        for item in self.address:
            limiter.hit(item, "login", "address:" + address)

    def bursts(self, *, username: str, address: str, db: Session | None = None) -> list[str]:
        """Count an unsuccessful attempt (failed or refused) towards the burst marks; returns
        the marks this attempt reached ("account", "address"): each once per window."""
        limiter = self._limiter(db)
        reached = []
        for kind, item, key in (("account", self.account_burst, self._account_key(username)),
                                ("address", self.address_burst, address)):
            if limiter.hit(item, "burst", kind, key) and \
                    limiter.get_window_stats(item, "burst", kind, key).remaining == 0:
                reached.append(kind)
        return reached

    def succeeded(self, *, username: str, db: Session | None = None) -> None:
        limiter = self._limiter(db)
        for item in self.account:
            limiter.clear(item, "login", "account:" + self._account_key(username))


def client_address(request) -> str:
    """The address a login comes from (the server faces the school's network directly)."""
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True)
class LoginOutcome:
    person: Person | None = None
    refusal: Refusal | None = None
    disabled: bool = False  # the password was right but the account is disabled


def attempt_login(db: Session, throttle: LoginThrottle, *, username: str, password: str, address: str,
                  via: str) -> LoginOutcome:
    """Check the throttle, then the password; record a failure or a refusal in the audit log
    (committed here: it must stay even though the login fails).  The caller commits a
    successful login's session."""
    from policy_server.people import auth

    username = username.strip().lower()[:64]
    refusal = throttle.check(username=username, address=address, db=db)
    if refusal is not None:
        audit(db, actor=username or "-", action="person.login_refused", target=username,
              detail={"address": address, "retry_after": refusal.retry_after, "by": refusal.reason,
                      "via": via})
        for burst in throttle.bursts(username=username, address=address, db=db):
            _burst_incident(db, burst=burst, username=username, address=address)
        db.commit()
        return LoginOutcome(refusal=refusal)
    person = auth.authenticate(db, username, password)
    if person is not None:
        throttle.succeeded(username=username, db=db)
        audit(db, actor=person.username, action="person.login", target=person.username,
              detail={"address": address, "via": via})
        return LoginOutcome(person=person)
    known = auth.find_person(db, username)
    disabled = bool(known is not None and known.disabled
                    and auth.verify_password(known.password_hash, password))
    audit(db, actor=username or "-", action="person.login_failed", target=username,
          detail={"address": address, "via": via,
                  "why": "disabled" if disabled else ("wrong_password" if known else "unknown_account")})
    throttle.failed(username=username, address=address, db=db)
    for burst in throttle.bursts(username=username, address=address, db=db):
        _burst_incident(db, burst=burst, username=username, address=address)
    db.commit()
    return LoginOutcome(disabled=disabled)


def _burst_incident(db: Session, *, burst: str, username: str, address: str) -> None:
    """Tell the responsible person: an incident (admin notice) per account or address and hour."""
    from datetime import UTC, datetime

    from policy_server.incidents.engine import process_drafts
    from policy_server.rules import IncidentDraft, RuleInput, Severity

    subject = username if burst == "account" else address
    title = LOGIN_BURST_TITLE % {"account": username or "-", "address": address}
    draft = IncidentDraft(rule="auth.login_burst", title=title[:300], severity=Severity.high,
                          clauses=BURST_CLAUSES, dedup_key=f"auth.login_burst:{burst}:{subject}"[:300],
                          window_s=3600, params={"kind": burst, "account": username, "address": address},
                          notify=("admin",))
    event = RuleInput(event_id="", type="auth.login_failed", agent_id=None,  # type: ignore[arg-type]
                      occurred_at=datetime.now(UTC), data={})
    process_drafts(db, [(draft, event)])
    log.warning("login burst: %s %s", burst, subject)
