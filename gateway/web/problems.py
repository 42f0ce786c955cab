"""Errors as ``application/problem+json`` (RFC 9457), translated once for all of HTTP.

Every error answer has a stable ``type`` (``urn:lockgate:problem:<slug>``), a title, the HTTP
status and a detail that is safe to show: the service errors' messages are written for the
person who acted, and anything unexpected becomes a bare ``internal`` problem with the
traceback only in the server log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway import errors as ge
from gateway.errors import AuditError
from policy import errors as pe
from recorder import errors as re_
from vault import errors as ve

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/problem+json"
PREFIX = "urn:lockgate:problem:"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = extra


TITLES = {
    "bad-request": "Bad request",
    "invalid-input": "Invalid input",
    "unauthorized": "Sign-in required",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "invalid-transition": "Not allowed in this state",
    "precondition-failed": "Changed since it was read",
    "payload-too-large": "Request body too large",
    "unsupported-media-type": "Unsupported media type",
    "csrf": "Cross-site request refused",
    "too-many-requests": "Too many attempts",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
}

# Most specific first: subclasses before their roots.
_MAPPING: tuple[tuple[type[BaseException], int, str], ...] = (
    (ge.SignalRejected, 401, "unauthorized"),
    (ge.SignalReplayed, 409, "conflict"),
    (ge.SignalsNotConfigured, 503, "unavailable"),
    (pe.NotFound, 404, "not-found"),
    (ve.NotFound, 404, "not-found"),
    (re_.NotFound, 404, "not-found"),
    (pe.AccessDenied, 403, "forbidden"),
    (pe.Conflict, 409, "conflict"),
    (pe.InvalidTransition, 409, "invalid-transition"),
    (pe.InvalidInput, 422, "invalid-input"),
    (ve.InvalidInput, 422, "invalid-input"),
    (re_.InvalidRule, 422, "invalid-input"),
    (re_.InvalidQuery, 422, "invalid-input"),
    (AuditError, 503, "unavailable"),
    (ve.VaultError, 503, "unavailable"),
)

_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def problem_response(status: int, slug: str, detail: str, **extra: Any) -> web.Response:
    body = {
        "type": PREFIX + slug,
        "title": TITLES.get(slug, slug),
        "status": status,
        "detail": detail,
        **extra,
    }
    response = web.json_response(body, status=status, content_type=CONTENT_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="lockgate"'
    return response


def translate(exc: BaseException) -> web.Response:
    if isinstance(exc, Problem):
        return problem_response(exc.status, exc.slug, exc.detail, **exc.extra)
    for kind, status, slug in _MAPPING:
        if isinstance(exc, kind):
            shown = status != 503 or isinstance(exc, ge.SignalsNotConfigured)
            detail = str(exc) if shown else "a required service is unavailable; retry"
            return problem_response(status, slug, detail)
    if isinstance(exc, tuple(ge.UNAVAILABLE)):  # the database unreachable: retry, never a 500
        return problem_response(503, "unavailable", "a required service is unavailable; retry")
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        slug = _HTTP_SLUGS.get(exc.status, "bad-request")
        detail = {
            404: "no such resource",
            405: "method not allowed on this resource",
            413: "the request body is too large",
        }.get(exc.status, exc.reason)
        response = problem_response(exc.status, slug, detail)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    log.error("unhandled error in an HTTP handler", exc_info=exc)
    return problem_response(500, "internal", "an internal error occurred; it has been logged")


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API paths answer every error as problem+json; pages pass redirects and HTML through."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not _wants_problem(request):
            raise
        return translate(exc)
    except Exception as exc:
        if not _wants_problem(request) and isinstance(exc, Problem) and exc.status == 401:
            raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs})) from None
        return translate(exc)


def _wants_problem(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "json" in request.headers.get("Accept", "")
