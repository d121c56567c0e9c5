"""ISUO tests reuse the server fixtures: `api` on SQLite and on PostgreSQL (real databases)."""

from tests.server.conftest import Api, api, db_url  # noqa: F401  (fixtures)
from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)
from tests.web.conftest import client, csrf_of, login, web_app  # noqa: F401,E402  (fixtures, helpers)
