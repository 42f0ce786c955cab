"""The API's route table: one declaration per endpoint gives the handler, who may call it, the
models of its body and query string (``gateway.web.schemas``), the type it answers with
(``gateway.web.shapes``) and its OpenAPI description, so the document cannot drift from the
routes (``gateway.web.openapi`` builds it from this table).

Handlers receive a ``Call`` (the principal, the validated body and query, the app's parts)
and return a value; the table turns it into JSON: a list route's items become one page
(``{"items": [...], "next": cursor}``), a creation answers 201 with ``Location``, a resource
with an ``ETag`` that ``If-Match`` on its updates must match (412 otherwise; without
``If-Match`` the update applies, so existing clients keep working). Every GET also answers
HEAD. Role checks here are coarse (signed in, auditor, admin); ownership (a requester sees
only their own objects) is decided by the services, which answer "not found" for what the
caller may not see.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from gateway.render import to_jsonable
from gateway.web import jsonbody, paging
from gateway.web.auth import PRINCIPAL, Principal
from gateway.web.deps import DEPS, Deps
from gateway.web.problems import Problem
from gateway.web.schemas import NoQuery, Query
from policy.errors import AccessDenied

API = "/api/v1"
# Room for every field at its longest even when each character is sent as a 12-byte
# escaped surrogate pair, so a body the schema allows is never refused for its size.
MAX_BODY = 1024 * 1024

# Who may call a route at all.
PUBLIC = "public"  # no sign-in (the document itself; signals carry their own HMAC)
USER = "user"
AUDITOR = "auditor"
ADMIN = "admin"
# The roles of each access level, any one of which suffices (x-required-roles).
ROLES = {PUBLIC: [], USER: [], AUDITOR: ["auditor", "admin"], ADMIN: ["admin"]}


@dataclass
class Call:
    request: web.Request
    deps: Deps
    body: dict[str, Any]
    who: Principal | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        assert self.who is not None
        return self.who.name

    def arg(self, name: str) -> str:
        return self.request.match_info[name]

    def query(self, name: str, default: str = "") -> str:
        value = self.params.get(name)
        return default if value is None else str(value)

    def flag(self, name: str) -> bool:
        return bool(self.params.get(name))


Result = Any
HandlerFn = Callable[[Call], Awaitable[Result]]
Current = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under /api/v1
    handler: HandlerFn
    summary: str
    access: str
    body: Any  # a Body model, an Annotated union of them (schemas.NEW_TARGET), or None
    query: type[Query]
    status: int
    tag: str
    returns: Any  # the success answer's type (of one item when paged)
    paged: bool = False
    location: Callable[[Any], str] | None = None  # a 201's Location, from the result
    current: Current | None = None  # the resource an If-Match is checked against
    etag: bool = False  # the answer carries an ETag
    media: Sequence[str] = ("application/json",)
    errors: Sequence[int] = ()  # statuses beyond those every route of its kind has

    @property
    def adapter(self) -> TypeAdapter[Any] | None:
        return _adapter(self.body)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(body: Any) -> TypeAdapter[Any] | None:
    if body is None:
        return None
    if body not in _ADAPTERS:
        _ADAPTERS[body] = TypeAdapter(body)
    return _ADAPTERS[body]


@dataclass
class RouteTable:
    routes: list[Route] = field(default_factory=list)

    def add(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        access: str = USER,
        body: Any = None,
        query: type[Query] = NoQuery,
        status: int = 200,
        tag: str = "",
        returns: Any = Any,
        paged: bool = False,
        location: Callable[[Any], str] | None = None,
        current: Current | None = None,
        etag: bool = False,
        media: Sequence[str] = ("application/json",),
        errors: Sequence[int] = (),
    ) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            self.routes.append(
                Route(
                    method,
                    path,
                    fn,
                    summary,
                    access,
                    body,
                    query,
                    status,
                    tag,
                    returns,
                    paged,
                    location,
                    current,
                    etag,
                    tuple(media),
                    tuple(errors),
                )
            )
            return fn

        return register

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            endpoint = _endpoint(route)
            app.router.add_route(route.method, API + route.path, endpoint)
            if route.method == "GET":
                app.router.add_route("HEAD", API + route.path, endpoint)


def _check_access(route: Route, who: Principal | None) -> None:
    if route.access == PUBLIC:
        return
    if who is None:
        raise Problem(401, "unauthorized", "sign in or send a bearer token")
    if route.access == AUDITOR and not who.user.is_auditor:
        raise Problem(403, "forbidden", "this needs the auditor or admin role")
    if route.access == ADMIN and not who.user.is_admin:
        raise Problem(403, "forbidden", "this needs the admin role")


_TYPES = {
    "string_type": "string",
    "int_type": "integer",
    "int_from_float": "integer",
    "bool_type": "boolean",
    "list_type": "array",
    "dict_type": "object",
    "float_type": "number",
    "model_type": "object",
}


def _invalid(exc: ValidationError, where: str) -> Problem:
    """A 422 naming each field and what is wrong with it (never the value sent)."""
    errors = []
    for error in exc.errors(include_input=False, include_url=False):
        # A union's member (its tag) is not a field the client wrote.
        parts = [str(p) for p in error["loc"] if not (isinstance(p, str) and p[:1].isupper())]
        parts = [p for p in parts if p not in ("ssh", "web", "ca", "pinned", "insecure")]
        name = ".".join(parts)
        kind = error["type"]
        if kind == "extra_forbidden":
            errors.append(f"unknown field {name!r}")
        elif kind == "missing":
            errors.append(f"missing field {name!r}")
        elif kind in _TYPES and name:
            errors.append(f"{name!r} must be a {_TYPES[kind]}")
        else:
            errors.append(f"{name or where}: {error['msg']}")
    return Problem(422, "invalid-input", "; ".join(errors)[:2000], errors=errors[:50])


async def read_body(request: web.Request, route: Route) -> dict[str, Any]:
    """The JSON object body, validated by the route's model: anything the model refuses is
    422; what is not a usable JSON object is 400; no body is an empty object."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, "payload-too-large", f"the body is over {MAX_BODY} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise Problem(413, "payload-too-large", f"the body is over {MAX_BODY} bytes")
    if not raw.strip():
        data: Any = {}
    else:
        if request.content_type not in ("application/json", ""):
            raise Problem(415, "unsupported-media-type", "send application/json")
        try:
            data = jsonbody.loads(raw)
        except jsonbody.BadJson as exc:
            raise Problem(400, "bad-request", f"the body is not usable JSON: {exc}") from None
        except (ValueError, UnicodeDecodeError):
            raise Problem(400, "bad-request", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Problem(400, "bad-request", "the body must be a JSON object")
    adapter = route.adapter
    assert adapter is not None
    try:
        model = adapter.validate_python(data)
    except ValidationError as exc:
        raise _invalid(exc, "body") from None
    except PydanticCustomError as exc:  # raised by a union's discriminator (schemas)
        raise Problem(422, "invalid-input", exc.message(), errors=[exc.message()]) from None
    dumped: dict[str, Any] = model.model_dump(by_alias=True)
    return dumped


def read_query(request: web.Request, route: Route) -> dict[str, Any]:
    """The query string, validated by the route's query model (422 otherwise)."""
    if any(len(request.query.getall(k)) > 1 for k in request.query):
        raise Problem(422, "invalid-input", "give each query parameter at most once")
    try:
        model: BaseModel = route.query.model_validate(dict(request.query))
    except ValidationError as exc:
        raise _invalid(exc, "query") from None
    return model.model_dump(by_alias=True)


def etag_of(value: Any) -> str:
    """A strong ETag of a resource: the digest of its JSON form."""
    raw = json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":")).encode()
    return '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'


async def _check_precondition(route: Route, call: Call) -> None:
    wanted = call.request.headers.get("If-Match")
    if wanted is None or route.current is None:
        return
    now = etag_of(await route.current(call))
    tags = [t.strip() for t in wanted.split(",")]
    if "*" not in tags and now not in tags:
        raise Problem(
            412,
            "precondition-failed",
            "it changed since you read it (If-Match does not match its ETag); read it again",
        )


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        who = request.get(PRINCIPAL)
        try:
            _check_access(route, who)
            for name, value in request.match_info.items():
                if "\x00" in value:  # PostgreSQL cannot hold one, so nothing has it
                    raise Problem(404, "not-found", f"no {name} by that name")
            params = read_query(request, route)
            body = await read_body(request, route) if route.body is not None else {}
            call = Call(request, request.app[DEPS], body, who, params)
            await _check_precondition(route, call)
            result = await route.handler(call)
        except (Problem, AccessDenied) as exc:
            forbidden = isinstance(exc, AccessDenied) or exc.status == 403
            if forbidden and who is not None:
                await request.app[DEPS].services.refusals.refused(
                    actor=who.name,
                    action="api.refused",
                    subject=f"{route.method} {route.path}",
                    reason=str(exc),
                    client=request.remote or "",
                    details={"path": request.path[:200]},
                )
            raise
        return _respond(route, request, result)

    return endpoint


def _respond(route: Route, request: web.Request, result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if route.paged:
        if not isinstance(result, paging.Page):
            result = paging.page_of(request, result)
        return paging.respond(request, to_jsonable(list(result.items)), result.token)
    response = web.json_response(to_jsonable(result), status=route.status)
    if route.location is not None:
        response.headers["Location"] = API + route.location(result)
    if route.etag or route.current is not None:
        response.headers["ETag"] = etag_of(result)
    return response


TABLE = RouteTable()
"""Every API route; the ``api_*`` modules add theirs on import."""
