"""Security headers on every answer (OWASP ASVS V14.4), as a plain ASGI middleware (no
buffering: the policy stream and the events route pass through untouched but for headers).

* `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`,
  `Cross-Origin-Opener-Policy` / `-Resource-Policy: same-origin`;
* `Content-Security-Policy` fit for the pages: everything from the server itself only (the
  stylesheet, htmx in /static), no inline script or style, forms post only here, no framing;
* `Strict-Transport-Security` when the server runs TLS;
* `Cache-Control: no-store` on every answer that does not say otherwise: the JSON API and
  the pages carry personal data (static files and the agent's policy set their own).
"""

from __future__ import annotations

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HSTS = "max-age=31536000"

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", CSP.encode()),
)


class SecurityHeaders:
    def __init__(self, app, *, tls: bool) -> None:
        self.app = app
        self.extra = _ALWAYS + (((b"strict-transport-security", HSTS.encode()),) if tls else ())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.extra if name not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)
