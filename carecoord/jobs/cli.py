"""``carecoord worker`` (run workers alone) and ``carecoord jobs`` (list jobs, retry dead ones)."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from carecoord.settings import Settings

__all__ = ["jobs_app", "worker"]

jobs_app = typer.Typer(help="The job queue: list jobs, retry dead ones.", no_args_is_help=True)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


def _engine(config: Path | None, *, pool_size: int | None = None) -> tuple[Settings, Engine]:
    from carecoord.cli import _migrate, _settings
    from carecoord.db import make_engine

    settings = _settings(config)
    _migrate(settings)
    engine = make_engine(
        settings.effective_database_url, pool_size=pool_size or settings.db_pool_size
    )
    return settings, engine


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@jobs_app.command("list")
def list_command(
    dead: Annotated[bool, typer.Option("--dead", help="Only dead-lettered jobs.")] = False,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    connection: Annotated[str | None, typer.Option(help="Only jobs for this connection.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 100,
    config: ConfigOption = None,
) -> None:
    """List ready, running and dead jobs (oldest first; payloads are not shown)."""
    from carecoord.jobs.queue import list_dead, list_jobs

    _, engine = _engine(config)
    try:
        if dead:
            found = list_dead(engine, kind=kind, connection=connection, limit=limit)
        else:
            found = list_jobs(engine, kind=kind, connection=connection, limit=limit)
    finally:
        engine.dispose()
    if not found:
        console.print("no jobs")
        return
    table = Table(title="Dead jobs" if dead else "Jobs")
    for column in ("id", "kind", "connection", "status", "attempts", "run at (UTC)", "last error"):
        table.add_column(column, justify="right" if column in ("id", "attempts") else "left")
    for job in found:
        table.add_row(
            str(job.id),
            job.kind,
            job.connection or "",
            job.status,
            f"{job.attempts}/{job.max_attempts}",
            _when(job.run_at),
            job.last_error or "",
        )
    Console(width=200).print(table)


@jobs_app.command("retry")
def retry_command(
    job_id: Annotated[int, typer.Argument(help="Id of a dead job.")],
    config: ConfigOption = None,
) -> None:
    """Make a dead job ready again, with a fresh set of attempts."""
    from carecoord.jobs.queue import retry_dead

    _, engine = _engine(config)
    try:
        revived = retry_dead(engine, job_id)
    finally:
        engine.dispose()
    if not revived:
        console.print(f"[red]job {job_id} is not dead (or does not exist)[/red]")
        raise typer.Exit(1)
    console.print(f"job {job_id} is ready again")


def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Worker threads in this process.")
    ] = 1,
    once: Annotated[bool, typer.Option("--once", help="Run the jobs due now, then exit.")] = False,
    imports: Annotated[
        list[str] | None,
        typer.Option("--import", help="Also import this module of job handlers (repeatable)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run job workers until Ctrl-C or SIGTERM (the jobs in hand are finished first)."""
    from carecoord.cli import _configure_logging
    from carecoord.db import is_postgres
    from carecoord.jobs.registry import default_registry, import_handler_modules
    from carecoord.jobs.worker import Worker

    settings, engine = _engine(config, pool_size=concurrency + 2)
    _configure_logging(settings.log_level)
    try:
        import_handler_modules(imports or ())
    except ImportError as exc:
        console.print(f"[red]cannot import job handlers: {exc}[/red]")
        engine.dispose()
        raise typer.Exit(2) from exc
    if not len(default_registry):
        console.print("[yellow]no job handlers are registered: nothing will run[/yellow]")
    if concurrency > 1 and not is_postgres(engine):
        console.print("[yellow]SQLite has one writer at a time: extra workers gain little[/yellow]")
    try:
        if once:
            ran = Worker(engine, default_registry).run_once()
            typer.echo(f"ran {ran} job(s)")
            return
        _run_until_signalled(engine, concurrency)
    finally:
        engine.dispose()


def _run_until_signalled(engine: Engine, concurrency: int) -> None:
    from carecoord.jobs.registry import default_registry
    from carecoord.jobs.worker import run_workers

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # second signal: leave now, jobs in hand rerun after the lease
        console.print("stopping: finishing the jobs in hand (signal again to quit now)")
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        threads = run_workers(engine, default_registry, stop, concurrency=concurrency)
        console.print(f"{concurrency} worker(s) running; Ctrl-C to stop")
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.5)
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
