"""`/openapi.json` and `/docs` for the responsible person only, served by the server itself.

FastAPI's own `/docs` loads Swagger UI from a CDN and is open to anyone; here both are behind
an admin login (docs/security.md).  `/docs` is a plain server-rendered list of the routes,
their parameters and bodies (no script, no CDN); `/openapi.json` is the full description
(what schemathesis reads, logged in as the responsible person)."""

from __future__ import annotations

import json
from html import escape

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from policy_server import scope
from policy_server.db.models import Role

router = APIRouter(include_in_schema=False)
ADMIN = scope.allow(Role.admin)


@router.get("/openapi.json")
def openapi(request: Request, _viewer: scope.Viewer = Depends(ADMIN)) -> JSONResponse:
    return JSONResponse(request.app.openapi())


def _schema_text(schema: dict | None) -> str:
    return escape(json.dumps(schema or {}, ensure_ascii=False, indent=1)[:4000])


@router.get("/docs")
def docs(request: Request, _viewer: scope.Viewer = Depends(ADMIN)) -> HTMLResponse:
    spec = request.app.openapi()
    parts = [f"<h1>{escape(spec['info']['title'])} {escape(spec['info']['version'])}</h1>",
             '<p><a href="/openapi.json">openapi.json</a></p>']
    for path, methods in sorted(spec.get("paths", {}).items()):
        for method, op in methods.items():
            parts.append(f"<h2><code>{escape(method.upper())} {escape(path)}</code></h2>")
            if op.get("summary"):
                parts.append(f"<p>{escape(op['summary'])}</p>")
            params = op.get("parameters") or []
            if params:
                parts.append("<ul>" + "".join(
                    f"<li><code>{escape(p['name'])}</code> ({escape(p['in'])}"
                    f"{', required' if p.get('required') else ''}): <code>{_schema_text(p.get('schema'))}"
                    "</code></li>" for p in params) + "</ul>")
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
            if body:
                parts.append(f"<pre>{_schema_text(body.get('schema'))}</pre>")
    html = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>API</title>"
            "<link rel=\"stylesheet\" href=\"/static/kalkan.css\"></head><body><main>"
            + "".join(parts) + "</main></body></html>")
    return HTMLResponse(html)
