"""The one page the gateway itself shows on a target's origin: why a request was refused.

Plain HTML from ``templates/refusal.html`` (Jinja2, autoescaped): no script, no style sheet,
no cookie, nothing of the gateway's own pages, so serving it on a target's origin gives that
origin nothing of the gateway. A strict CSP (``default-src 'none'``) keeps even a later
template edit from loading anything. It says what is missing and where to go: the request
form on the gateway's origin (``/access?target=NAME``), the hand-off to sign in again, or
nothing when nothing helps (a lock). Messages never hold a secret: only target, method,
path and the reason words of the policy and the kill switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"
CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
_template = _env.get_template("refusal.html")


@dataclass(frozen=True)
class Refusal:
    """Why a request to a target is not served. ``kind`` is a stable word for the
    recording and metrics (``no_grant``, ``locked``, ``not_allowed``, ``terminated``,
    ``sign_in``, ``blocked``, ``no_target``, ``upstream``, ``bad_request``)."""

    kind: str
    status: int
    title: str
    message: str
    target: str = ""
    detail: str = ""
    links: tuple[tuple[str, str], ...] = field(default=())


def request_form(gateway: str, target: str) -> str:
    return f"{gateway}/access?{urlencode({'target': target})}"


def open_link(gateway: str, target: str, path: str = "") -> str:
    url = f"{gateway}/open/{quote(target, safe='')}"
    return f"{url}?{urlencode({'next': path})}" if path and path != "/" else url


def no_grant(target: str, gateway: str, message: str = "") -> Refusal:
    return Refusal(
        "no_grant",
        403,
        "No access right now",
        f"You have no active grant for {target}.",
        target,
        message,
        (("Request access", request_form(gateway, target)),),
    )


def locked(target: str, message: str) -> Refusal:
    return Refusal("locked", 403, "Locked", message, target)


def not_allowed(target: str, method: str, path: str, gateway: str) -> Refusal:
    return Refusal(
        "not_allowed",
        403,
        "Not allowed by your grant",
        f"Your grant for {target} does not allow {method} {path}.",
        target,
        "Ask for a grant under a rule that allows it.",
        (("Request access", request_form(gateway, target)),),
    )


def terminated(target: str, reason: str, gateway: str) -> Refusal:
    return Refusal(
        "terminated",
        403,
        "Session ended",
        f"session terminated: {reason}",
        target,
        "",
        (("Open it again", open_link(gateway, target)),),
    )


def sign_in(target: str, gateway: str, path: str = "") -> Refusal:
    return Refusal(
        "sign_in",
        401,
        "Sign in first",
        f"Open {target} from Lockgate to sign in to it.",
        target,
        "",
        (("Open through Lockgate", open_link(gateway, target, path)),),
    )


def blocked(target: str, rule: str) -> Refusal:
    return Refusal("blocked", 403, "Blocked", f"This request was blocked by rule {rule}.", target)


def no_target(target: str, gateway: str) -> Refusal:
    return Refusal(
        "no_target",
        404,
        "No such web target",
        f"Lockgate has no web target named {target}.",
        target,
        "",
        (("Lockgate", gateway + "/"),),
    )


def upstream(target: str, status: int, what: str) -> Refusal:
    return Refusal("upstream", status, "The target did not answer", what, target)


def unavailable(target: str) -> Refusal:
    return Refusal("unavailable", 503, "Try again", "Lockgate could not check your access.", target)


def bad_request(target: str, what: str) -> Refusal:
    return Refusal("bad_request", 400, "Bad request", what, target)


def page(refusal: Refusal) -> web.Response:
    """The refusal as a response: status, the page, and headers that cache nothing and
    allow nothing."""
    body = _template.render(
        title=refusal.title,
        message=refusal.message,
        detail=refusal.detail,
        links=refusal.links,
        target=refusal.target,
    )
    return web.Response(
        status=refusal.status,
        text=body,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        },
    )
