"""The responsible person's console (issue 11): the web fixtures, reused."""

from tests.web.conftest import client, csrf_of, login, school, web_app  # noqa: F401
