"""Ticket validation against a real aiohttp ticket checker: a valid ticket's summary is
stored and shown to approvers (API, approvals page, CLI); a ticket the checker calls invalid
is refused with the checker's reason (exit 1 on the CLI); a checker that times out or is
down refuses when failing closed, and files the request marked "not checked" otherwise."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import Node
from gateway.cli.main import main
from gateway.tickets import TicketChecker, TicketSettings
from policy.errors import AccessDenied
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.nodes import start_test_node
from tests.target import free_port

RULE = Rule(
    name="tickets",
    roles=frozenset({"dev"}),
    approvals=1,
    approver_roles=frozenset({"approver"}),
    ticket_pattern=r"^[A-Z]+-[0-9]+$",
)
GLASS = Rule(
    name="glass",
    roles=frozenset({"oncall"}),
    approvals=1,
    approver_roles=frozenset({"approver"}),
    ticket_pattern=r"^[A-Z]+-[0-9]+$",
    break_glass=True,
)
ANSWERS = {
    "INC-7": {"valid": True, "summary": "INC-7: disk full on db01 (open, P2)"},
    "INC-9": {"valid": False, "summary": "INC-9 is closed since 2026-11-30"},
    "BAD-1": {"valid": "yes"},
}


@dataclass
class Checker:
    calls: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def check(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        if body["ticket"] == "SLOW-1":
            await self.release.wait()  # longer than the gateway waits
        return web.json_response(ANSWERS.get(body["ticket"], {"valid": True, "summary": "ok"}))


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    state = Checker()
    app = web.Application()
    app.router.add_post("/check", state.check)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/check"  # type: ignore[union-attr]
    yield state
    state.release.set()
    await runner.cleanup()


@pytest.fixture
async def node(db_url: str, tmp_path: Path, checker: Checker) -> AsyncIterator[Node]:
    started = await start_test_node(
        db_url,
        tmp_path,
        name="ticket-node",
        rules=(RULE, GLASS),
        environ={"LOCKGATE_TICKETS_URL": checker.url, "LOCKGATE_TICKETS_TIMEOUT": "1s"},
    )
    policy = started.services.policy
    for name, roles in (("alice", ["dev"]), ("bob", ["approver"]), ("olga", ["oncall"])):
        await policy.add_user(SYSTEM_ACTOR, name, roles=roles)
    await policy.add_target(SYSTEM_ACTOR, "db01", host="10.0.0.5", accounts=["root"])
    yield started
    await started.stop("test finished")


async def ask(node: Node, ticket: str) -> Any:
    return await node.services.policy.create_request(
        "alice", "db01", account="root", duration=timedelta(hours=1), reason="disk", ticket=ticket
    )


async def lockgate(node: Node, *argv: str) -> tuple[int, str, str]:
    """The real command line on the gateway host, in this process (a worker thread)."""
    config = node.config.server.data_dir.parent / "lockgate.toml"
    config.write_text(
        f'[server]\ndata_dir = "{node.config.server.data_dir}"\n'
        f'[database]\nurl = "{node.config.database_url}"\n'
        f'[tickets]\nurl = "{node.config.tickets.url}"\n'
        '[[rules]]\nname = "tickets"\nroles = ["dev"]\napprover_roles = ["approver"]\n'
        'ticket_pattern = "^[A-Z]+-[0-9]+$"\n'
    )
    out, err = io.StringIO(), io.StringIO()
    status = await asyncio.to_thread(main, [*argv, "--config", str(config)], out, err)
    return status, out.getvalue(), err.getvalue()


async def test_a_valid_tickets_summary_is_shown_to_approvers(node: Node, checker: Checker) -> None:
    request = await ask(node, "INC-7")
    assert request.ticket_summary == "INC-7: disk full on db01 (open, P2)"
    assert checker.calls == [
        {"ticket": "INC-7", "user": "alice", "target": "db01", "account": "root"}
    ]
    token, _ = await node.services.policy.create_token(SYSTEM_ACTOR, "bob")
    base = f"http://127.0.0.1:{node.http_port}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(f"{base}/api/v1/requests/{request.id}") as response:
            assert (await response.json())["ticket_summary"] == request.ticket_summary
        async with http.get(f"{base}/approvals?request={request.id}") as response:
            page = await response.text()
        async with http.get(f"{base}/approvals?request=rq-gone") as response:
            missing = await response.text()
    assert "INC-7: disk full on db01 (open, P2)" in page
    assert "No request rq-gone waits for you." in missing
    status, out, err = await lockgate(node, "requests", "--pending", "--json", "--as", "bob")
    assert status == 0, err
    assert [r["ticket_summary"] for r in json.loads(out)] == [request.ticket_summary]
    status, out, _ = await lockgate(node, "requests", "--pending", "--as", "bob")
    assert "INC-7: disk full on db01 (open, P2)" in out


async def test_a_ticket_the_checker_rejects_refuses_the_request_with_its_reason(
    node: Node, checker: Checker
) -> None:
    with pytest.raises(AccessDenied, match="ticket INC-9 refused: INC-9 is closed since"):
        await ask(node, "INC-9")
    status, out, err = await lockgate(
        node, "request", "db01", "--account", "root", "--for", "1h", "--reason", "disk",
        "--ticket", "INC-9", "--as", "alice",
    )  # fmt: skip
    assert status == 1 and out == ""
    assert err == "lockgate: ticket INC-9 refused: INC-9 is closed since 2026-11-30\n"
    with pytest.raises(AccessDenied, match="answer is not"):
        await ask(node, "BAD-1")
    assert await node.services.policy.list_requests(SYSTEM_ACTOR) == []


async def test_a_checker_that_times_out_or_is_down_fails_closed(
    node: Node, checker: Checker
) -> None:
    with pytest.raises(AccessDenied, match="did not answer within 1s"):
        await ask(node, "SLOW-1")
    checker.release.set()
    down = TicketSettings(url=f"http://127.0.0.1:{free_port()}/check")
    policy = node.services.policy
    policy.tickets = TicketChecker(down)
    with pytest.raises(AccessDenied, match="cannot be reached"):
        await ask(node, "INC-7")
    assert await policy.list_requests(SYSTEM_ACTOR) == []
    # Break-glass goes ahead while the ticket system is down, marked unchecked...
    glass = await policy.create_request(
        "olga", "db01", account="root", duration=timedelta(minutes=30), reason="outage",
        ticket="INC-7",
    )  # fmt: skip
    assert glass.grant_id and "could not check it" in glass.ticket_summary
    # ... but not past an explicit "no".
    policy.tickets = TicketChecker(replace(down, url=checker.url))
    with pytest.raises(AccessDenied, match="INC-9 is closed"):
        await policy.create_request(
            "olga", "db01", account="root", duration=timedelta(minutes=30), reason="outage",
            ticket="INC-9",
        )  # fmt: skip
    policy.tickets = TicketChecker(replace(down, fail_closed=False))
    filed = await ask(node, "INC-7")
    assert filed.ticket_summary.startswith("not checked (the ticket system could not check it")
