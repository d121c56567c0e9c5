from tests.server.conftest import api, db_url  # noqa: F401  (fixtures: SQLite and PostgreSQL)
from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401
