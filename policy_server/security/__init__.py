"""Security edges of the server (docs/security.md): the API docs behind an admin login, the
security headers on every answer, and login throttling."""
