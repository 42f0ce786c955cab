"""The report's tests run a real node with a real sshd target, as the web tests do."""

from tests.gateway.web.conftest import web  # noqa: F401  (the fixture)
