"""The `request`/`response` hooks' per-connection memo (`_KnownShape` in agent/proxy/addon.py)
changes nothing: the same sequence of requests on the same connections goes through two addons,
one keeping the memo and one whose memo is forgotten before every hook (so each request takes the
full path), and both must answer alike after every step — the response set (block pages, refusals,
the report and unblock pages), the request as forwarded (SafeSearch), the flow's metadata, the
held-for-DNS requests — and end with the same events, usage counts and history.

The sequences mix keep-alive requests of one shape with everything that may invalidate what the
memo knows: another Host, destination, port, scheme, version or method; a subject change on the
connection; a new policy; a seat or room change; time moving across minute edges, a ban's end
inside a minute and a lesson's start and end; the DNS cache that let a name and an address agree
expiring; and a connection closed and its id reused.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from agent.proxy import pages
from agent.proxy.addon import ConnSubject, KalkanAddon
from agent.proxy.destcheck import DestinationCheck
from agent.proxy.engine import Engine
from agent.proxy.subject import OsUser
from policy_server.protocol import PolicyBundle

# Monday 2025-03-03 10:15:30 in Bishkek (UTC+6): half a minute into a minute
T0 = datetime(2025, 3, 3, 4, 15, 30, tzinfo=UTC)
T0_S = T0.timestamp()
DNS = {"school.test": frozenset({"10.0.0.5"}), "news.test": frozenset({"10.0.0.5"}),
       "www.google.com": frozenset({"192.0.2.9"}), "other.test": frozenset()}


def _bundle(version: int) -> dict:
    return PolicyBundle.model_validate({
        "version": version,
        "groups": [{"name": "student", "kind": "student", "os_users": ["stu"]},
                   {"name": "teacher", "kind": "teacher", "os_users": ["tch"]}],
        "filtering": {
            # not free.test; version 2 not school.test either
            "allow_list": ["news.test", "www.google.com", "10.0.0.5",
                           *(["school.test"] if version == 1 else [])],
            "block_list": ["bad.test", "news.test/politics"] + (["school.test"] if version == 2 else []),
            "unsupervised": {"student": "allow_list"},
            "download_block": {"student": ["archive", "executable"]},
            "ip_literals": {"teacher": "allow"},
        },
        "lessons": [{"id": "L1", "room": "lab1", "teacher": "t.aliev", "group": "student", "mode": "open",
                     "starts_at": (T0 + timedelta(seconds=150.25)).isoformat(),  # 10:18:00.25
                     "ends_at": (T0 + timedelta(seconds=280.5)).isoformat()}],  # 10:20:10.5
        "bans": [{"id": "B1", "os_user": "tch", "until": (T0 + timedelta(seconds=15.5)).isoformat(),
                  "by": "admin"},  # ends inside minute 10:15
                 {"id": "B4", "os_user": "tch", "until": (T0 + timedelta(seconds=90)).isoformat(),
                  "by": "admin"},  # ends at 10:17:00
                 {"id": "B3", "seat": "s2", "until": (T0 + timedelta(days=1, seconds=30)).isoformat(),
                  "by": "admin"}],
        "network": {"proxy_ports": [80, 443, 8080]},
    }).model_dump(mode="json")


BUNDLES = {1: _bundle(1), 2: _bundle(2)}
SUBJECTS = {
    "student": ConnSubject(user=OsUser(1001, "stu", ()), system=False),
    "teacher": ConnSubject(user=OsUser(1002, "tch", ()), system=False),
    "system": ConnSubject(user=OsUser(105, "_apt", ()), system=True),
}


class _FrozenNow(datetime):
    @classmethod
    def now(cls, tz=None):
        return T0.astimezone(tz)


class Sink:
    def __init__(self) -> None:
        self.events: list = []

    def emit(self, event_type, data, *, subject=None, clauses=None) -> None:
        dumped = data.model_dump(mode="json") if hasattr(data, "model_dump") else data
        self.events.append((event_type, dumped, subject, clauses))

    def close(self) -> None:
        pass


class Side:
    """One addon under test with its clock, DNS cache and the requests it held for a lookup."""

    def __init__(self, clock: list[float], *, forget: bool) -> None:
        self.sink = Sink()
        self.addon = KalkanAddon(sink=self.sink, clock=lambda: clock[0])
        self.addon.dest = DestinationCheck(lookup=lambda name: DNS.get(name, frozenset()),
                                           clock=lambda: clock[0])
        for name in DNS:
            self.addon.dest.resolve_now(name)
        self.held: list = []
        self.addon._check_later = lambda flow, subject, claimed, target, port: self.held.append(
            (flow.request.url, subject.name, claimed, target, port))
        self.forget = forget

    def hook(self, name: str, flow: http.HTTPFlow) -> None:
        if self.forget:
            self.addon._known.clear()
        getattr(self.addon, name)(flow)


def _flow(conn: str, req: dict) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.client_conn.id = conn
    headers = []
    if req["host_header"] is not None:
        headers.append((b"Host", req["host_header"].encode()))
    if req["dest"]:
        headers.append((b"Sec-Fetch-Dest", req["dest"].encode()))
    if req["accept"]:
        headers.append((b"Accept", req["accept"].encode()))
    flow.request = http.Request(
        host=req["target"], port=req["port"], method=req["method"].encode(), scheme=req["scheme"].encode(),
        authority=req["authority"].encode(), path=req["path"].encode(), http_version=req["version"].encode(),
        headers=http.Headers(headers), content=b"", trailers=None, timestamp_start=T0_S, timestamp_end=T0_S)
    return flow


def _snapshot(flow: http.HTTPFlow, side: Side) -> tuple:
    response = flow.response
    return (None if response is None else (response.status_code, response.content, response.headers.fields),
            flow.request.url, flow.request.headers.fields, dict(flow.metadata), list(side.held))


targets = ["school.test", "10.0.0.5", "bad.test", "www.google.com", "emis.edu.gov.kg", "report.kalkan",
           "192.0.2.9", "news.test", "other.test"]
ANY = {
    "host_header": st.sampled_from(["school.test", "School.Test.", "bad.test", "www.google.com",
                                    "emis.edu.gov.kg", "report.kalkan", "10.0.0.5", "news.test:8080",
                                    "school.test:8080", "192.0.2.9", None]),
    "target": st.sampled_from(targets),
    "port": st.sampled_from([80, 80, 8080, 2222]),
    "scheme": st.sampled_from(["http", "http", "https"]),
    "authority": st.sampled_from(["", "", "same", "target"]),
    "version": st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/2.0"]),
    "method": st.sampled_from(["GET", "GET", "POST", "CONNECT"]),
    "path": st.sampled_from(["/", "/a", "/politics", "/__kalkan__/unblock", "/search?q=casino", "*",
                             "/x.zip"]),
    "dest": st.sampled_from([None, "document", "image"]),
    "accept": st.sampled_from([None, "text/html", "*/*"]),
    "content_type": st.sampled_from(["text/html", "application/zip", "application/x-msdownload"]),
}
requests = st.fixed_dictionaries(ANY)
USUAL_REQUEST = {"host_header": "school.test", "target": "host", "port": 80, "scheme": "http",
                 "authority": "same", "version": "HTTP/1.1", "method": "GET", "path": "/", "dest": "document",
                 "accept": None, "content_type": "text/html"}
# mostly the usual keep-alive request: a name or address that is also the destination, a web port
usual = st.fixed_dictionaries({
    **ANY,
    "host_header": st.sampled_from(["school.test", "news.test", "10.0.0.5", "bad.test", "www.google.com",
                                    "school.test:8080", "free.test"]),
    "target": st.sampled_from(["school.test", "news.test", "10.0.0.5", "bad.test", "host", "host"]),
    "port": st.sampled_from([80, 8080]),
    "authority": st.sampled_from(["", "same"]),
    "method": st.sampled_from(["GET", "GET", "POST"]),
    "path": st.sampled_from(["/", "/a", "/politics", "/x.zip", "/__kalkan__/unblock"]),
})
steps = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(["c1", "c2"]), st.one_of(usual, usual, usual, requests),
              st.integers(1, 6)),
    st.tuples(st.just("tick"),
              st.sampled_from([0.0, 0.0004, 0.3, 14.5, 29.9995, 30.0, 45.0, 59.9996, 130.0])),
    st.tuples(st.just("at"), st.sampled_from([40.0, 90.0, 100.0, 150.25, 215.0]), st.integers(-2, 1)),
    st.tuples(st.just("subject"), st.sampled_from(["c1", "c2"]),
              st.sampled_from(["student", "teacher", "system", "same-again", None])),
    st.tuples(st.just("policy"), st.sampled_from([1, 2])),
    st.tuples(st.just("seat"), st.sampled_from(["s1", "s2", "s1-again", None]),
              st.sampled_from(["lab1", "lab2", None])),
    st.tuples(st.just("close"), st.sampled_from(["c1", "c2"])),
)


def run_program(start: float, program: list) -> tuple[Side, Side]:
    """Run `program` through an addon that keeps the memo and one that forgets it before every
    hook; assert they answer every request alike and end in the same state."""
    clock = [T0_S + start]
    # the block page prints the wall clock's minute: the same for both sides
    with taddons.context() as tctx, mock.patch.object(pages, "datetime", _FrozenNow):
        tctx.options.update()  # the block page reads kalkan_language through ctx.options
        sides = [Side(clock, forget=False), Side(clock, forget=True)]
        tctx.master.addons.add(sides[0].addon)
        for side in sides:
            side.addon.engine = Engine.from_bundle(BUNDLES[1])
            side.addon._seat, side.addon._room = "s1", "lab1"
            for conn in ("c1", "c2"):
                side.addon._subjects[conn] = SUBJECTS["student"]
        for step in program:
            kind = step[0]
            if kind == "request":
                _, conn, req, times = step
                req = {**USUAL_REQUEST, **req}
                if req["target"] == "host":  # the destination the Host names
                    req["target"] = (req["host_header"] or "school.test").partition(":")[0]
                if req["authority"] == "same":
                    req["authority"] = req["host_header"] or ""
                elif req["authority"] == "target":
                    req["authority"] = f"{req['target']}:{req['port']}"
                for _ in range(times):  # keep-alive: the same shape again
                    snapshots = []
                    for side in sides:
                        flow = _flow(conn, req)
                        side.hook("request", flow)
                        if flow.response is None:
                            flow.response = http.Response.make(200, b"body", {
                                "Content-Type": req["content_type"]})
                        side.hook("response", flow)
                        snapshots.append(_snapshot(flow, side))
                    assert snapshots[0] == snapshots[1], (step, clock[0] - T0_S)
            elif kind == "tick":
                clock[0] += step[1]
            elif kind == "at":  # an instant `ulps` floats away from T0 + seconds
                clock[0] = T0_S + step[1]
                for _ in range(abs(step[2])):
                    clock[0] = math.nextafter(clock[0], math.inf if step[2] > 0 else -math.inf)
            elif kind == "subject":
                for side in sides:
                    if step[2] is None:
                        side.addon._subjects.pop(step[1], None)
                    elif step[2] == "same-again":  # an equal subject, another object
                        old = side.addon._subjects.get(step[1], SUBJECTS["student"])
                        side.addon._subjects[step[1]] = ConnSubject(user=old.user, system=old.system)
                    else:
                        side.addon._subjects[step[1]] = SUBJECTS[step[2]]
            elif kind == "policy":
                for side in sides:
                    side.addon.engine = Engine.from_bundle(BUNDLES[step[1]])
            elif kind == "seat":
                seat = "".join(["s", "1"]) if step[1] == "s1-again" else step[1]  # equal, not the same object
                for side in sides:
                    side.addon._seat, side.addon._room = seat, step[2]
            elif kind == "close":
                for side in sides:
                    client = tflow.tclient_conn()
                    client.id = step[1]
                    side.addon.client_disconnected(client)
                    side.addon._subjects[step[1]] = SUBJECTS["teacher"]
        a, b = sides
        assert a.sink.events == b.sink.events
        assert a.addon.usage._counts == b.addon.usage._counts
        assert a.addon.history._by_user == b.addon.history._by_user
        assert a.addon._lesson_seen == b.addon._lesson_seen
        assert a.held == b.held
        return a, b


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.sampled_from([0.0, 29.9995, 15.0]), program=st.lists(steps, min_size=1, max_size=40))
def test_memo_answers_as_the_full_path(start: float, program: list) -> None:
    run_program(start, program)


def _req(conn: str = "c1", times: int = 2, **fields) -> tuple:
    return ("request", conn, fields, times)


# Each invalidation of what the memo knows, once on purpose (the generated programs above find
# them only by chance).  T0 = 10:15:30; minutes 10:16, 10:17 and 10:19 are safe to keep (no ban
# or lesson starts or ends inside them), 10:17:00 ends tch's ban B4, 10:19 is in the lesson.
SCENARIOS = {
    "a new policy": [_req(), ("policy", 2), _req()],
    "another subject on the connection": [
        _req(), ("subject", "c1", "teacher"), _req(), ("subject", "c1", "system"), _req(),
        ("subject", "c1", None), _req(), ("subject", "c1", "same-again"), _req()],
    "the room changes during a lesson": [("at", 215, 0), _req(host_header="free.test"),
                                         ("seat", "s1", "lab2"), _req(host_header="free.test"),
                                         ("seat", "s1", "lab1"), _req(host_header="free.test")],
    "the seat changes": [("at", 215, 0), _req(), ("seat", "s2", "lab1"), _req(), ("seat", "s1", "lab1"),
                         _req()],
    "a ban ends on a whole minute, decided a hair before it": [
        ("subject", "c1", "teacher"), ("at", 40, 0), _req(), ("at", 90, -1), _req(), ("at", 90, -2), _req(),
        ("at", 90, 0), _req(), ("at", 100, 0), _req()],
    "the next minute": [("subject", "c1", "teacher"), ("at", 40, 0), _req(), ("at", 100, 0), _req()],
    "the DNS answer that made Host and address agree expires": [
        _req(target="10.0.0.5"), ("tick", 130.0), _req(target="10.0.0.5")],
    "the unblock path on a known shape": [_req(), _req(path="/__kalkan__/unblock", method="POST")],
    "CONNECT on a known shape": [_req(), _req(method="CONNECT")],
    "a closed connection's id reused": [_req(), ("close", "c1"), _req()],
    "a download after a page, student and teacher": [
        _req(path="/x.zip", content_type="application/zip"), ("subject", "c1", "teacher"), ("at", 100, 0),
        _req(path="/x.zip", content_type="application/zip")],
}


@pytest.mark.parametrize("program", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_memo_scenarios(program: list) -> None:
    run_program(0.0, program)


def test_keep_alive_requests_take_the_memo() -> None:
    """The memo is really used: the second request of a shape on a connection does not reach the
    full path (else the parity test above would prove nothing)."""
    clock = [T0_S]
    with taddons.context() as tctx:
        side = Side(clock, forget=False)
        tctx.master.addons.add(side.addon)
        side.addon.engine = Engine.from_bundle(BUNDLES[1])
        side.addon._subjects["c1"] = SUBJECTS["student"]
        full = []
        real = side.addon._request_full
        side.addon._request_full = lambda *args: (full.append(args[0]), real(*args))
        req = {"host_header": "school.test", "target": "school.test", "port": 80, "scheme": "http",
               "authority": "school.test", "version": "HTTP/1.1", "method": "GET", "path": "/a",
               "dest": "document", "accept": None}
        for path in ("/a", "/b", "/c"):
            side.hook("request", _flow("c1", {**req, "path": path}))
        assert len(full) == 1
        assert side.addon.usage._counts == {"school.test": 3}
        assert [page.url for page in side.addon.history.recent("stu", clock[0])] == [
            "http://school.test/c", "http://school.test/b", "http://school.test/a"]
        side.hook("request", _flow("c1", {**req, "host_header": "news.test", "authority": "news.test",
                                          "target": "news.test"}))
        assert len(full) == 2  # another shape: the full path again


def test_entry_script_module_answers_every_hook_name_with_none() -> None:
    """mitm_entry binds every hook name to None (a missing name costs an AttributeError on each
    event); mitmproxy still finds each hook on the addon, and nothing on the module itself."""
    from mitmproxy import hooks
    from mitmproxy.addonmanager import AddonManager
    from mitmproxy.addons.script import load_script
    from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook

    from agent.proxy import mitm_entry

    module = load_script(mitm_entry.__file__)
    assert all(getattr(module, name) is None for name in hooks.all_hooks)
    assert isinstance(module.addons[0], KalkanAddon)
    manager = AddonManager.__new__(AddonManager)  # `_iter_hooks` needs no master
    flow = tflow.tflow(resp=True)
    for hook in (hooks.UpdateHook([flow]), HttpRequestHook(flow), HttpResponseHook(flow)):
        found = [addon for addon, _ in manager._iter_hooks(module, hook)]
        assert found == ([] if hook.name == "update" else [module.addons[0]]), hook.name
