"""Security headers on every answer (docs/security.md "Headers"), against a real TLS server:
every route of the app, anonymous and as the responsible person; HSTS only with TLS;
`no-store` wherever personal data may be; /docs without a CDN or script."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from policy_server.app import create_app
from policy_server.settings import Settings
from tests.support.server import KalkanServerProcess

PASSWORD = "headers-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with KalkanServerProcess(tmp_path_factory.mktemp("headers")) as running:  # TLS, as in a school
        running.create_user("admin", "boss", PASSWORD)
        yield running


def _route_calls(tmp_path) -> list[tuple[str, str]]:
    app = create_app(Settings(state_dir=tmp_path, tls=False))
    try:
        calls = []
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute) or route.path.endswith("/stream"):
                continue
            path = route.path
            for param in route.dependant.path_params:
                path = path.replace("{" + param.name + "}", "1")
            calls += [(method, path) for method in sorted(route.methods - {"HEAD", "OPTIONS"})]
        return calls
    finally:
        app.state.engine.dispose()


def _check(answer, where: str) -> None:
    h = answer.headers
    assert h.get("x-content-type-options") == "nosniff", where
    assert h.get("referrer-policy") == "no-referrer", where
    assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), where
    assert "unsafe-inline" not in h["content-security-policy"] and "http" not in h["content-security-policy"]
    assert h.get("strict-transport-security", "").startswith("max-age="), where
    path = where.split()[1]
    if path.endswith((".css", ".js")):  # static files: cacheable, no personal data
        assert "max-age" in h.get("cache-control", ""), where
    else:
        assert h.get("cache-control") in ("no-store", "no-cache"), where


def test_every_route_answers_with_the_headers(server, tmp_path):
    calls = _route_calls(tmp_path)
    assert len(calls) > 20
    with server.client() as anonymous, server.login("boss", PASSWORD) as admin:
        for method, path in calls:
            for who, client in (("anonymous", anonymous), ("admin", admin)):
                answer = client.request(method, path, json={} if method != "GET" else None)
                _check(answer, f"{method} {path} as {who} -> {answer.status_code}")


def test_personal_data_is_never_cached_and_static_files_are(server):
    with server.login("boss", PASSWORD) as admin:
        assert admin.get("/api/v1/incidents").headers["cache-control"] == "no-store"
        assert admin.get("/incidents").headers["cache-control"] == "no-store"
        assert admin.get("/api/v1/isuo/access").headers["cache-control"] == "no-store"
        assert "max-age" in admin.get("/static/kalkan.css").headers["cache-control"]


def test_api_docs_for_the_admin_only_and_without_a_cdn(server):
    with server.client() as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401
        assert anonymous.get("/docs", follow_redirects=False).status_code == 303  # to the login page
        assert anonymous.get("/redoc").status_code == 404
    with server.login("boss", PASSWORD) as admin:
        spec = admin.get("/openapi.json").json()
        assert "/api/v1/incidents/{incident_id}" in spec["paths"]
        docs = admin.get("/docs")
        assert docs.status_code == 200 and "<script" not in docs.text and "cdn" not in docs.text.lower()


def test_no_hsts_without_tls(tmp_path):
    app = create_app(Settings(state_dir=tmp_path, tls=False))
    try:
        with TestClient(app) as client:
            answer = client.get("/healthz")
            assert "strict-transport-security" not in answer.headers
            assert answer.headers["x-content-type-options"] == "nosniff"
    finally:
        app.state.engine.dispose()
