"""The API's route table: one declaration per endpoint gives the handler, who may call it, the
body schema it accepts and its OpenAPI description, so the document cannot drift from the
routes (a test compares them).

Handlers receive a ``Call`` (the principal, the validated body and the app's parts) and return
a value; the table turns it into JSON. Role checks here are coarse (signed in, auditor,
admin); ownership (a requester sees only their own objects) is decided by the services, which
answer "not found" for what the caller may not see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.render import to_jsonable
from gateway.web import jsonbody, paging
from gateway.web.auth import PRINCIPAL, Principal
from gateway.web.deps import DEPS, Deps
from gateway.web.problems import Problem
from policy.errors import AccessDenied

API = "/api/v1"
MAX_BODY = 64 * 1024

# Who may call a route at all.
PUBLIC = "public"  # no sign-in (the document itself; signals carry their own HMAC)
USER = "user"
AUDITOR = "auditor"
ADMIN = "admin"

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "array": list,
    "object": dict,
    "number": (int, float),
}


@dataclass(frozen=True)
class F:
    """One body field."""

    type: str
    required: bool = False
    items: str | None = None
    max_length: int = 4096


@dataclass
class Call:
    request: web.Request
    deps: Deps
    body: dict[str, Any]
    who: Principal | None

    @property
    def actor(self) -> str:
        assert self.who is not None
        return self.who.name

    def arg(self, name: str) -> str:
        return self.request.match_info[name]

    def query(self, name: str, default: str = "") -> str:
        return self.request.query.get(name, default)

    def flag(self, name: str) -> bool:
        return self.request.query.get(name, "").lower() in ("1", "true", "yes")


Result = Any
HandlerFn = Callable[[Call], Awaitable[Result]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under /api/v1
    handler: HandlerFn
    summary: str
    access: str
    body: Mapping[str, F] | None
    query: Mapping[str, str]
    status: int
    tag: str


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
        body: Mapping[str, F] | None = None,
        query: Mapping[str, str] | None = None,
        status: int = 200,
        tag: str = "",
    ) -> Callable[[HandlerFn], HandlerFn]:
        def register(fn: HandlerFn) -> HandlerFn:
            self.routes.append(
                Route(method, path, fn, summary, access, body, query or {}, status, tag)
            )
            return fn

        return register

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            app.router.add_route(route.method, API + route.path, _endpoint(route))


def _check_access(route: Route, who: Principal | None) -> None:
    if route.access == PUBLIC:
        return
    if who is None:
        raise Problem(401, "unauthorized", "sign in or send a bearer token")
    if route.access == AUDITOR and not who.user.is_auditor:
        raise Problem(403, "forbidden", "this needs the auditor or admin role")
    if route.access == ADMIN and not who.user.is_admin:
        raise Problem(403, "forbidden", "this needs the admin role")


async def read_body(request: web.Request, schema: Mapping[str, F]) -> dict[str, Any]:
    """The JSON object body, checked against ``schema``: unknown fields, wrong types and
    missing required fields are 422; anything but a JSON object is 400."""
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
    errors = []
    for name in data:
        if name not in schema:
            errors.append(f"unknown field {name!r}")
    for name, spec in schema.items():
        if name not in data or data[name] is None:
            if spec.required:
                errors.append(f"missing field {name!r}")
            continue
        value = data[name]
        if not _is(value, spec.type):
            errors.append(f"{name!r} must be a {spec.type}")
        elif spec.type == "string" and len(value) > spec.max_length:
            errors.append(f"{name!r} is longer than {spec.max_length} characters")
        elif spec.type == "array" and spec.items and not all(_is(v, spec.items) for v in value):
            errors.append(f"{name!r} must be an array of {spec.items}")
    if errors:
        raise Problem(422, "invalid-input", "; ".join(errors), errors=errors)
    return data


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[kind])


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        who = request.get(PRINCIPAL)
        try:
            _check_access(route, who)
            body = await read_body(request, route.body) if route.body is not None else {}
            result = await route.handler(Call(request, request.app[DEPS], body, who))
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
        if isinstance(result, web.StreamResponse):
            return result
        if isinstance(result, paging.Page):
            after = paging.encode(result.next) if result.next is not None else None
            return paging.respond(request, to_jsonable(list(result.items)), after, route.status)
        if isinstance(result, list) and route.method == "GET" and "cursor" in route.query:
            chunk, token = paging.page_of(request, result)
            return paging.respond(request, to_jsonable(chunk), token, route.status)
        return web.json_response(to_jsonable(result), status=route.status)

    return endpoint


def openapi(table: RouteTable) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in the table."""
    paths: dict[str, dict[str, Any]] = {}
    for route in table.routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "tags": [route.tag] if route.tag else [],
            "x-lockgate-access": route.access,
            "responses": {
                str(route.status): {"description": "success"},
                "default": {
                    "description": "an error",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                },
            },
        }
        if route.access != PUBLIC:
            op["security"] = [{"bearer": []}, {"cookie": []}]
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(route.path)
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in route.query.items()
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": any(f.required for f in route.body.values()),
                "content": {"application/json": {"schema": _schema(route.body)}},
            }
        paths.setdefault(API + route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Lockgate API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "lockgate_session"},
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                    },
                }
            },
        },
    }


def _schema(body: Mapping[str, F]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, spec in body.items():
        prop: dict[str, Any] = {"type": spec.type}
        if spec.items:
            prop["items"] = {"type": spec.items}
        if spec.type == "string":
            prop["maxLength"] = spec.max_length
        props[name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    required = [n for n, f in body.items() if f.required]
    if required:
        schema["required"] = required
    return schema


def _path_params(path: str) -> list[str]:
    import re

    return re.findall(r"\{(\w+)\}", path)


TABLE = RouteTable()
"""Every API route; the ``api_*`` modules add theirs on import."""
