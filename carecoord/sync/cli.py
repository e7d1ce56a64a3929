"""``carecoord sync run`` (pull now) and ``carecoord sync status``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from carecoord.settings import ConfigError, Settings

__all__ = ["sync_app"]

sync_app = typer.Typer(help="EHR sync: pull now, show status.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


def _setup(config: Path | None) -> tuple[Settings, Engine]:
    from carecoord.cli import _configure_logging, _migrate, _settings
    from carecoord.db import make_engine

    settings = _settings(config)
    _configure_logging(settings.log_level)
    _migrate(settings)
    return settings, make_engine(settings.effective_database_url, pool_size=settings.db_pool_size)


@dataclass
class _Outcome:
    connection: str
    population: str
    run_id: int | None = None
    members: str = ""
    counts: tuple[int, int, int, int] | None = None
    error: str | None = None


async def _run(
    settings: Settings, engine: Engine, names: list[str] | None, specs: list[str]
) -> list[_Outcome]:
    from carecoord.sync.config import parse_population
    from carecoord.sync.errors import SyncError
    from carecoord.sync.pull import error_text
    from carecoord.sync.runtime import SyncRuntime

    runtime = SyncRuntime(settings, engine)
    outcomes: list[_Outcome] = []
    try:
        for name in names or [c.name for c in runtime.connections]:
            runtime.connection(name)
            named = runtime.settings_for(name).named_populations()
            populations = [parse_population(s, named) for s in specs] or runtime.populations(name)
            for population in populations:
                outcome = _Outcome(name, population.key)
                outcomes.append(outcome)
                try:
                    (report,) = await runtime.pull(name, population)
                except SyncError as exc:
                    outcome.error = error_text(exc)
                    continue
                c = report.counts
                outcome.run_id = report.run_id
                outcome.members = f"{report.members} ({report.new_members} new)"
                outcome.counts = (c.fetched, c.written, c.skipped, c.rejected)
    finally:
        await runtime.aclose()
    return outcomes


@sync_app.command("run")
def run_command(
    connection: Annotated[
        list[str] | None,
        typer.Option("--connection", "-n", help="Only this connection (repeatable)."),
    ] = None,
    population: Annotated[
        list[str] | None,
        typer.Option(
            "--population",
            "-p",
            help="open-cases | group:ID | patients:ID,ID | a configured name (repeatable); "
            "default: the connection's configured populations, else open-cases.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Pull now: every configured connection (or --connection), each population once."""
    from carecoord.sync.errors import SyncConfigError

    settings, engine = _setup(config)
    try:
        outcomes = asyncio.run(_run(settings, engine, connection, population or []))
    except (SyncConfigError, ConfigError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    if not outcomes:
        err.print("no EHR connection is configured (config/ehr/)")
        raise typer.Exit(2)
    table = Table(title="Pull")
    for column in ("connection", "population", "run", "patients", "fetched", "written"):
        table.add_column(
            column, justify="left" if column in ("connection", "population") else "right"
        )
    table.add_column("skipped", justify="right")
    table.add_column("rejected", justify="right")
    table.add_column("result")
    for o in outcomes:
        counts = [str(n) for n in o.counts] if o.counts else ["", "", "", ""]
        result = "[green]ok[/green]" if o.error is None else f"[red]{o.error}[/red]"
        table.add_row(
            o.connection,
            o.population,
            str(o.run_id or ""),
            o.members,
            *counts,
            result,
        )
    Console(width=200).print(table)
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "never"


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@sync_app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """Per connection: last successful sync, lag, queue depth, failures, last error, circuit."""
    from carecoord.smart.connections import load_connections
    from carecoord.sync.config import load_sync_config
    from carecoord.sync.errors import SyncConfigError
    from carecoord.sync.status import sync_status

    settings, engine = _setup(config)
    try:
        names = [c.name for c in load_connections(settings.config_dir, check_secrets=False)]
        found = sync_status(engine, names, config=load_sync_config(settings.config_dir))
    except (SyncConfigError, ConfigError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"connections": [s.as_json() for s in found]}, indent=2))
        return
    if not found:
        err.print("no EHR connection is configured and none has synced")
        return
    table = Table(title="EHR sync")
    for column in ("connection", "last success (UTC)", "lag", "queue", "failures", "circuit"):
        table.add_column(column)
    table.add_column("last error", overflow="fold")
    for s in found:
        queue = f"{s.queue.ready} ready, {s.queue.running} running"
        if s.queue.dead:
            queue += f", [red]{s.queue.dead} dead[/red]"
        circuit = s.circuit if s.circuit == "closed" else f"[red]{s.circuit}[/red]"
        failures = f"{s.consecutive_failures} in a row, {s.total_failures} total"
        table.add_row(
            s.connection + ("" if s.configured else " (not configured)"),
            _when(s.last_success),
            _lag(s.lag_seconds),
            queue,
            failures,
            circuit,
            s.last_error or "",
        )
    Console(width=200).print(table)
