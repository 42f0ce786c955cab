"""The CLI's tests drive a real node through the API like the web tests do."""

from tests.gateway.web.conftest import web  # noqa: F401  (the fixture)
