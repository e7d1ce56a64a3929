"""Fixtures of the job queue tests: a controllable clock and helpers to add and read jobs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from carecoord.db import run_write
from carecoord.jobs import JobInfo, enqueue, get_job

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        self.now = moment


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


Add = Callable[..., int | None]


@pytest.fixture
def add(engine: Engine, clock: FakeClock) -> Add:
    """Enqueue one job in its own transaction (at the fake clock's time unless told otherwise)."""

    def add_job(**kwargs: Any) -> int | None:
        kwargs.setdefault("payload", {})
        kwargs.setdefault("clock", clock)
        return run_write(engine, lambda conn: enqueue(conn, **kwargs))

    return add_job


def job(engine: Engine, job_id: int | None) -> JobInfo:
    assert job_id is not None
    found = get_job(engine, job_id)
    assert found is not None
    return found


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
