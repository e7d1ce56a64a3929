"""``carecoord jobs list|retry`` and ``carecoord worker --once`` through typer's CliRunner."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from sqlalchemy import Engine
from typer.testing import CliRunner

from carecoord.jobs import Fatal, JobContext, Registry, Worker, utc_now
from carecoord.jobs.cli import jobs_app, worker
from tests.jobs import sample_handlers
from tests.jobs.conftest import Add, job

cli = typer.Typer()
cli.command("worker")(worker)
cli.add_typer(jobs_app, name="jobs")


@pytest.fixture
def run(database_url: str) -> Any:
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, list(args), env={"CARECOORD_DATABASE_URL": database_url})

    return invoke


def _rows(output: str) -> list[list[str]]:
    """The data rows of a rich table."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def _dead_job(engine: Engine, add: Add) -> int:
    def refuse(payload: dict[str, Any], ctx: JobContext) -> None:
        raise Fatal("EHR refused the Task")

    registry = Registry()
    registry.register("ehr.push", refuse)
    job_id = add(kind="ehr.push", connection="epic", clock=utc_now)
    assert job_id is not None
    Worker(engine, registry).run_once()
    return job_id


def test_jobs_list_shows_ready_and_dead_jobs(engine: Engine, add: Add, run: Any) -> None:
    dead_id = _dead_job(engine, add)
    ready_id = add(kind="notify", payload={"secret": "do-not-print"})
    result = run("jobs", "list")
    assert result.exit_code == 0, result.output
    assert "ehr.push" in result.output and "notify" in result.output
    assert "Fatal: EHR refused the Task" in result.output
    assert "do-not-print" not in result.output

    assert {row[0] for row in _rows(result.output)} == {str(dead_id), str(ready_id)}

    result = run("jobs", "list", "--dead")
    assert result.exit_code == 0, result.output
    assert [row[:4] for row in _rows(result.output)] == [[str(dead_id), "ehr.push", "epic", "dead"]]


def test_jobs_list_says_when_empty(engine: Engine, run: Any) -> None:
    result = run("jobs", "list", "--dead")
    assert result.exit_code == 0, result.output
    assert "no jobs" in result.output


def test_jobs_retry_revives_a_dead_job(engine: Engine, add: Add, run: Any) -> None:
    dead_id = _dead_job(engine, add)
    result = run("jobs", "retry", str(dead_id))
    assert result.exit_code == 0, result.output
    assert job(engine, dead_id).status == "ready"
    result = run("jobs", "retry", str(dead_id))
    assert result.exit_code == 1
    assert "not dead" in result.output
    assert run("jobs", "retry", "999999").exit_code == 1


def test_worker_once_runs_imported_handlers(engine: Engine, add: Add, run: Any) -> None:
    sample_handlers.SEEN.clear()
    add(kind="tests.echo", payload={"n": 7}, clock=utc_now)
    result = run("worker", "--once", "--import", "tests.jobs.sample_handlers")
    assert result.exit_code == 0, result.output
    assert "ran 1 job(s)" in result.output
    assert sample_handlers.SEEN == [7]


def test_worker_refuses_a_missing_handler_module(engine: Engine, run: Any) -> None:
    result = run("worker", "--once", "--import", "tests.jobs.no_such_module")
    assert result.exit_code == 2
    assert "cannot import job handlers" in result.output
