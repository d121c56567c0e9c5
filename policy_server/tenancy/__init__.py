"""Many schools on one service (issue 16): a district hosting its schools' seats.

Each school is a whole Kalkan school server of its own — its own database (a PostgreSQL
database per school, or an SQLite file), its own state folder (school CA, filtering lists),
its own app with its own push hub and periodic jobs — chosen per request from the host
name the request was sent to (`dispatch.SchoolsService`).  No query can mix schools because
no connection reaches two schools' data.  docs/architecture.md "Many schools on one service",
docs/operations.md "Many schools on one service".
"""

from policy_server.tenancy import texts as _texts  # noqa: E402,F401  (registers the codes' texts)
