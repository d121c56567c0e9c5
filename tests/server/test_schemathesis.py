"""The whole API fuzzed from its OpenAPI document (schemathesis), as the responsible person
and as an agent: no input makes the server answer 5xx.  Bounded for CI: a few examples per
operation, each run time-limited; the events body is described in the document
(`events.views.events_body_schema`), so batches of generated events are sent too."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from policy_server.app import create_app
from policy_server.settings import Settings
from tests.server.conftest import PASSWORD, Api

EXAMPLES = 3  # per operation and role: bounded for CI
SKIP = {
    ("POST", "/api/v1/logout"),  # would end the admin session the other cases run in
    ("GET", "/api/v1/policy/stream"),  # an endless stream (revocation/shutdown tests cover it)
}

_state: dict = {}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    state = tmp_path_factory.mktemp("schemathesis")
    application = create_app(Settings(state_dir=state / "state", db_url=f"sqlite:///{state / 'k.sqlite'}",
                                      tls=False))
    with TestClient(application) as client:
        api = Api(client=client, app=application)
        api.user("admin", "boss")
        csrf = api.login("boss")
        _state["admin"] = {"headers": csrf, "cookies": dict(client.cookies)}
        _, auth = api.enroll("pc-01", seat="seat-1")
        _state["agent"] = {"headers": auth, "cookies": {}}
    return application


def _schema() -> dict:
    """The OpenAPI document, from an app of its own (a test module is collected before fixtures)."""
    with tempfile.TemporaryDirectory(prefix="kalkan-openapi-") as state:
        application = create_app(Settings(state_dir=Path(state), tls=False))
        document = application.openapi()
        application.state.engine.dispose()
    return document


schema = schemathesis.openapi.from_dict(_schema())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("role", ["admin", "agent"])
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_server_answer_5xx(app, role, case):
    if (case.method.upper(), case.path) in SKIP:
        return
    auth = _state[role]
    case.headers = {**(case.headers or {}), **auth["headers"]}
    response = case.call(app=app, cookies=auth["cookies"])
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])


def test_the_events_body_is_described_for_agents():
    body = _schema()["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    items = body["schema"]["properties"]["events"]["items"]
    assert {"id", "type", "occurred_at", "data"} <= set(items["properties"])
    assert "web.report" in items["properties"]["type"]["enum"]
    assert PASSWORD  # the admin above logs in with the shared test password
