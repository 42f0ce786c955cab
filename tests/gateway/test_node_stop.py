"""A node's stop says when a database connection is still in use: ``dispose()`` leaves it
open, and on SQLite it may hold the write lock the next start needs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.nodes import start_test_node


async def test_a_connection_still_in_use_at_stop_is_named_in_the_log(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = await start_test_node(db_url, tmp_path, name="stopping")
    left = await node.services.engine.connect()  # as a task that outlived the stop would
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.services"):
            await node.stop("test finished")
    finally:
        await left.close()
    assert "1 database connection(s) still in use at stop" in caplog.messages


async def test_a_clean_stop_says_nothing_of_connections(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = await start_test_node(db_url, tmp_path, name="stopping")
    with caplog.at_level(logging.WARNING, logger="gateway.services"):
        await node.stop("test finished")
    assert not [m for m in caplog.messages if "still in use" in m]
