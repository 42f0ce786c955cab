"""The OpenAPI 3.1 document of the route table: request schemas from the pydantic models the
routes validate with, response schemas from the types they answer with, every error status
a route can answer as ``application/problem+json`` with its stable ``type`` values, the
security schemes and, per operation, the roles that may call it (``x-required-roles``:
any one of them suffices; an empty list means any signed-in user)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter

from gateway.web import shapes
from gateway.web.problems import PREFIX, TITLES
from gateway.web.routes import API, PUBLIC, ROLES, Route, RouteTable

Schema = dict[str, Any]
REF = shapes.REF
SAFE = ("GET", "HEAD")

# The problem types each error status answers with.
PROBLEMS: dict[int, tuple[str, ...]] = {
    400: ("bad-request",),
    401: ("unauthorized",),
    403: ("forbidden", "csrf"),
    404: ("not-found",),
    409: ("conflict", "invalid-transition"),
    412: ("precondition-failed",),
    413: ("payload-too-large",),
    415: ("unsupported-media-type",),
    422: ("invalid-input",),
    503: ("unavailable",),
}
DESCRIPTION = """\
Lockgate's HTTP API.

* **Sign-in**: a bearer token (`Authorization: Bearer lgt_...`), or the web UI's cookie;
  a state change made with the cookie also needs the page's CSRF token in `X-CSRF-Token`
  and an `Origin` of this site.
* **Roles**: `x-required-roles` on each operation names the roles of which the caller needs
  one (empty: anyone signed in). Services also hide what a caller may not see: a requester
  gets 404 for another person's request, grant, session or recording.
* **Lists** are paged: `limit` (1-500, default 100) and `cursor`; the answer is
  `{"items": [...], "next": cursor-or-null}`, with the next page's URL also in `Link`.
* **Concurrent updates**: a resource's `ETag` can be sent back as `If-Match` on its
  updates; if it changed meanwhile the answer is 412 and nothing is changed. Without
  `If-Match` the update applies.
* **Errors** are `application/problem+json` (RFC 9457) whose `type` is one of
  `urn:lockgate:problem:<name>`; `detail` is written for the person who acted.
"""


def document(table: RouteTable) -> dict[str, Any]:
    """The OpenAPI document of every route in ``table``."""
    registry = shapes.Registry()
    builder = _Builder(registry)
    paths: dict[str, dict[str, Any]] = {}
    for route in table.routes:
        ops = paths.setdefault(API + route.path, {})
        ops[route.method.lower()] = builder.operation(route)
        if route.method == "GET":
            ops["head"] = builder.operation(route, head=True)
    schemas = {**registry.schemas, **builder.models, "Problem": _problem()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Lockgate API", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token: lockgate token create",
                },
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "lockgate_session",
                    "description": "the web UI's sign-in cookie",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRF-Token",
                    "description": "the page's CSRF token, with the cookie on state changes",
                },
            },
            "schemas": dict(sorted(schemas.items())),
        },
    }


def _problem() -> Schema:
    return {
        "type": "object",
        "description": "An error (RFC 9457)",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "enum": [PREFIX + slug for slug in TITLES]},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "string"}},
        },
    }


class _Builder:
    def __init__(self, registry: shapes.Registry) -> None:
        self.registry = registry
        self.models: dict[str, Schema] = {}

    def model(self, model: type[BaseModel]) -> Schema:
        name = model.__name__
        if name not in self.models:
            schema = model.model_json_schema(ref_template=REF + "{model}")
            for sub, definition in schema.pop("$defs", {}).items():
                self.models.setdefault(sub, definition)
            self.models[name] = schema
        return {"$ref": REF + name}

    def body(self, body: Any) -> Schema:
        if isinstance(body, type) and issubclass(body, BaseModel):
            return self.model(body)
        schema = TypeAdapter(body).json_schema(ref_template=REF + "{model}")
        for sub, definition in schema.pop("$defs", {}).items():
            self.models.setdefault(sub, definition)
        return schema

    def operation(self, route: Route, *, head: bool = False) -> dict[str, Any]:
        method = "head" if head else route.method.lower()
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{method}_{route.handler.__name__}",
            "tags": [route.tag] if route.tag else [],
            "x-lockgate-access": route.access,
            "responses": self.responses(route, head),
        }
        if route.access == PUBLIC:
            op["security"] = []
        else:
            op["x-required-roles"] = ROLES[route.access]
            cookie: dict[str, list[str]] = {"cookie": []}
            if route.method not in SAFE:
                cookie["csrf"] = []
            op["security"] = [{"bearer": []}, cookie]
        params = [_path_param(name) for name in re.findall(r"\{(\w+)\}", route.path)]
        params += _query_params(route)
        if route.current is not None:
            op["description"] = (
                "Send the resource's ETag as If-Match to apply this only if it has not "
                "changed since you read it (412 otherwise)."
            )
        if params:
            op["parameters"] = params
        if route.body is not None:
            adapter = route.adapter
            assert adapter is not None
            required = not isinstance(route.body, type) or bool(
                adapter.json_schema().get("required")
            )
            op["requestBody"] = {
                "required": required,
                "content": {"application/json": {"schema": self.body(route.body)}},
            }
        return op

    def responses(self, route: Route, head: bool) -> dict[str, Any]:
        returns = shapes.page_of(route.returns) if route.paged else route.returns
        schema = self.registry.of(returns)
        success: dict[str, Any] = {"description": _describe(route.status)}
        if not head and route.media:
            success["content"] = {
                media: {"schema": schema if media == "application/json" else {"type": "string"}}
                for media in route.media
            }
        headers = {}
        if route.location is not None:
            headers["Location"] = {
                "description": "the new resource",
                "schema": {"type": "string"},
            }
        if route.etag or route.current is not None:
            headers["ETag"] = {
                "description": "send as If-Match to update it",
                "schema": {"type": "string"},
            }
        if route.paged:
            headers["Link"] = {
                "description": 'the next page, rel="next" (also `next`)',
                "schema": {"type": "string"},
            }
        if headers:
            success["headers"] = headers
        answers: dict[str, Any] = {str(route.status): success}
        for status in sorted(_error_statuses(route)):
            answer: dict[str, Any] = {
                "description": ", ".join(PREFIX + s for s in PROBLEMS[status])
            }
            if not head:
                answer["content"] = {
                    "application/problem+json": {"schema": {"$ref": REF + "Problem"}}
                }
            answers[str(status)] = answer
        return answers


def _describe(status: int) -> str:
    return {
        101: "switching to the WebSocket protocol",
        201: "created",
        202: "accepted: it happens shortly",
    }.get(status, "OK")


def _error_statuses(route: Route) -> set[int]:
    # 400: what cannot be read as HTTP (a line over 8190 bytes, say) never reaches a route;
    # 401 also for a bad token sent to a public route
    statuses = {400, 401, 503, *route.errors}
    if route.access != PUBLIC:
        statuses |= {403, 404}
    if route.body is not None:
        statuses |= {400, 413, 415, 422}
    if route.method not in SAFE:
        statuses |= {404, 409}
    if route.query.model_fields:
        statuses.add(422)
    if route.paged:
        statuses.add(404)
    if route.current is not None:
        statuses.add(412)
    return statuses


def _path_param(name: str) -> Schema:
    schema: Schema = {"type": "string", "minLength": 1}
    if name == "kind":
        schema = {"type": "string", "enum": ["user", "target"]}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_params(route: Route) -> list[Schema]:
    schema = route.query.model_json_schema(by_alias=True)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        options = prop.pop("anyOf", None)
        if options is not None:
            kept = [o for o in options if o.get("type") != "null"]
            prop.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
            if prop.get("default", ...) is None:
                del prop["default"]
        param: Schema = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params
