"""Engine set-up, migrations and the retry of conflicting write transactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError

from carecoord.db import RetryableConflict, make_engine, run_write
from carecoord.migrate import alembic_config, upgrade


class _SerializationFailure(Exception):
    sqlstate = "40001"


def test_migrations_create_every_table_and_are_idempotent(migrated_engine: Engine) -> None:
    upgrade(migrated_engine)  # a second run changes nothing and does not fail
    tables = set(inspect(migrated_engine).get_table_names())
    assert {
        "resources",
        "resource_versions",
        "idx_token",
        "idx_string",
        "idx_reference",
        "idx_date",
        "idx_number",
        "alembic_version",
    } <= tables
    with migrated_engine.connect() as conn:
        applied = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    assert applied == set(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert {"api_clients", "api_used_jtis"} <= tables


def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'cc.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    assert (tmp_path / "new" / "cc.db").exists()
    engine.dispose()


def test_run_write_retries_serialization_failures(engine: Engine) -> None:
    attempts: list[int] = []

    def work(conn: object) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OperationalError(
                "UPDATE ...", {}, _SerializationFailure("could not serialize access")
            )
        return "done"

    assert run_write(engine, work) == "done"
    assert len(attempts) == 3


def test_run_write_gives_up_after_the_retry_budget(engine: Engine) -> None:
    def work(conn: object) -> None:
        raise RetryableConflict("always")

    with pytest.raises(RetryableConflict):
        run_write(engine, work, retries=2)


def test_run_write_does_not_retry_other_errors(engine: Engine) -> None:
    attempts: list[int] = []

    def work(conn: object) -> None:
        attempts.append(1)
        raise ValueError("a bug, not a conflict")

    with pytest.raises(ValueError):
        run_write(engine, work)
    assert len(attempts) == 1


def test_run_write_retries_raw_driver_deadlocks(engine: Engine) -> None:
    class DeadlockDetected(Exception):
        sqlstate = "40P01"

    attempts: list[int] = []

    def work(conn: object) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise DeadlockDetected("deadlock detected")
        return len(attempts)

    assert run_write(engine, work) == 2


def test_group_commit_rolls_back_a_failing_unit_alone(tmp_path: Path) -> None:
    from concurrent.futures import Future

    from carecoord.db import GroupCommitter, _Unit

    engine = make_engine(f"sqlite:///{tmp_path / 'gc.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER UNIQUE)")

    def insert(value: int, fail: Exception | None = None) -> Any:
        def work(conn: Any) -> int:
            conn.exec_driver_sql(f"INSERT INTO t VALUES ({value})")
            if fail is not None:
                raise fail
            return value

        return work

    committer = GroupCommitter(engine, retries=1)
    units = [
        _Unit(insert(1), Future()),
        _Unit(insert(2, ValueError("bad entry")), Future()),
        _Unit(insert(3), Future()),
    ]
    committer._run_batch(units)
    assert units[0].future.result() == 1 and units[2].future.result() == 3
    with pytest.raises(ValueError):
        units[1].future.result()
    with engine.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("SELECT x FROM t ORDER BY x")] == [1, 3]
    # Through the thread: results come back, conflicts are retried, errors reach the caller.
    assert committer.run(insert(4)) == 4
    with pytest.raises(ValueError):
        committer.run(insert(5, ValueError("no")))
    flaky = {"left": 1}

    def conflict_once(conn: Any) -> str:
        if flaky["left"]:
            flaky["left"] -= 1
            raise RetryableConflict("raced")
        return "ok"

    assert committer.run(conflict_once) == "ok"
    engine.dispose()


def test_group_commit_survives_a_unit_raising_a_base_exception(tmp_path: Path) -> None:
    from carecoord.db import GroupCommitter

    engine = make_engine(f"sqlite:///{tmp_path / 'gc2.db'}")
    committer = GroupCommitter(engine)

    def interrupted(conn: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        committer.run(interrupted)
    assert committer.run(lambda conn: conn.exec_driver_sql("SELECT 1").scalar()) == 1
    engine.dispose()


def test_group_commit_from_the_event_loop(tmp_path: Path) -> None:
    """Coroutines awaiting units get their own results and errors; a waiter that gave up
    (client gone) does not stop the others."""
    import asyncio

    from carecoord.db import GroupCommitter

    engine = make_engine(f"sqlite:///{tmp_path / 'gc3.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER UNIQUE)")
    committer = GroupCommitter(engine)

    def insert(value: int) -> Any:
        def work(conn: Any) -> int:
            conn.exec_driver_sql(f"INSERT INTO t VALUES ({value})")
            return value

        return work

    async def scenario() -> list[Any]:
        gone = asyncio.ensure_future(committer.run_async(insert(100)))
        await asyncio.sleep(0)
        gone.cancel()
        return await asyncio.gather(
            *(committer.run_async(insert(v)) for v in (1, 2, 3, 2)), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert sorted(r for r in results if isinstance(r, int)) == [1, 2, 3]
    assert sum(isinstance(r, Exception) for r in results) == 1  # the duplicate, alone
    with engine.connect() as conn:
        stored = [r[0] for r in conn.exec_driver_sql("SELECT x FROM t ORDER BY x")]
    assert stored == [1, 2, 3, 100]  # the cancelled waiter's unit was still written once
    engine.dispose()
