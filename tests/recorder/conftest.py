from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from recorder.recorder import Recorder
from recorder.store import RecordingStore
from recorder.tables import metadata
from tests.libdb import SessionMaker, create_recorder_schema


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def recorder(
    engine: AsyncEngine, maker: SessionMaker, tmp_path: Path, clock: Clock
) -> Recorder:
    await create_recorder_schema(engine)  # with its full-text index
    return Recorder(tmp_path / "rec", maker, clock=clock)


@pytest.fixture
def store(recorder: Recorder, maker: SessionMaker) -> RecordingStore:
    return RecordingStore(recorder.root, maker)


__all__ = ["metadata"]
