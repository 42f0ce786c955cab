"""Two nodes on one database stream a sink once: one holds its lease; when that node stops,
the other takes over from the durable cursor and nothing is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from gateway.db.tables import audit_head, stream_cursors
from gateway.stream.settings import JsonlSink
from tests.eventually import eventually
from tests.nodes import start_test_node


def seqs(path: Path) -> list[int]:
    found: list[int] = []
    for file in sorted(path.parent.glob(path.name + "*")):
        found += [json.loads(line)["seq"] for line in file.read_text().splitlines()]
    return found


async def test_one_node_streams_a_sink_and_the_other_takes_over(
    db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "siem" / "audit.jsonl"
    sink = (JsonlSink(name="file", path=out),)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await start_test_node(db_url, tmp_path / "a", name="node-a", audit_sinks=sink)
    second = await start_test_node(db_url, tmp_path / "b", name="node-b", audit_sinks=sink)
    nodes = {"node-a": first, "node-b": second}
    maker = first.services.maker

    async def state() -> tuple[int, str | None, int]:
        async with maker() as db:
            head = (await db.execute(sa.select(audit_head.c.seq))).scalar_one()
            row = (
                await db.execute(
                    sa.select(stream_cursors).where(stream_cursors.c.name == "audit:file")
                )
            ).first()
        return int(head), row.owner if row is not None else None, int(row.seq) if row else 0

    try:
        for i in range(10):
            await first.services.audit.record(actor="a", action="test.one", subject=str(i))
            await second.services.audit.record(actor="b", action="test.two", subject=str(i))

        async def caught_up() -> str | None:
            head, owner, at = await state()
            return owner if at == head and set(seqs(out)) == set(range(1, head + 1)) else None

        owner = await eventually(caught_up, what="the sink caught up")
        assert sorted(seqs(out)) == sorted(set(seqs(out)))  # one streamer: no duplicates
        other = next(name for name in nodes if name != owner)
        await nodes.pop(owner).stop("test: the streaming node leaves")
        for i in range(10):
            await nodes[other].services.audit.record(actor="c", action="test.three", subject=str(i))

        async def taken_over() -> bool:
            head, now_owner, at = await state()
            return now_owner == other and at == head and set(seqs(out)) == set(range(1, head + 1))

        await eventually(taken_over, what=f"{other} streaming from the cursor")
    finally:
        for node in nodes.values():
            await node.stop("test finished")
