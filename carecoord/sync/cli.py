"""``carecoord sync run`` (pull now), ``carecoord sync status`` and ``carecoord sync conflicts
list|resolve`` (push conflicts a person decides)."""

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

__all__ = ["conflicts_app", "sync_app"]

sync_app = typer.Typer(help="EHR sync: pull now, show status.", no_args_is_help=True)
conflicts_app = typer.Typer(
    help="Push conflicts: a change in CareCoord and one in the EHR that could not be merged.",
    no_args_is_help=True,
)
sync_app.add_typer(conflicts_app, name="conflicts")
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
    for column in (
        "connection",
        "last success (UTC)",
        "lag",
        "queue",
        "failures",
        "circuit",
        "conflicts",
    ):
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
            f"[red]{s.conflicts}[/red]" if s.conflicts else "0",
            s.last_error or "",
        )
    Console(width=200).print(table)


@conflicts_app.command("list")
def conflicts_list_command(
    connection: Annotated[
        str | None, typer.Option("--connection", "-n", help="Only this connection.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """The open push conflicts, oldest first (ids for `sync conflicts resolve`)."""
    from carecoord.sync.conflicts import list_conflicts

    _, engine = _setup(config)
    try:
        found = list_conflicts(engine, connection)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"conflicts": [c.as_json() for c in found]}, indent=2))
        return
    if not found:
        err.print("no open push conflict")
        return
    table = Table(title="Push conflicts")
    for column in ("id", "EHR id", "local version", "since (UTC)"):
        table.add_column(column)
    table.add_column("reason", overflow="fold")
    for c in found:
        table.add_row(c.id, c.ehr_id or "", str(c.local_version or ""), _when(c.at), c.reason or "")
    Console(width=200).print(table)


async def _resolve(
    settings: Settings, engine: Engine, connection: str, res_type: str, local: str, keep: str
) -> str:
    from carecoord.sync.conflicts import Keep, resolve_conflict
    from carecoord.sync.runtime import SyncRuntime

    runtime = SyncRuntime(settings, engine)
    try:
        if runtime.connection(connection).read_only:
            raise typer.BadParameter(f"EHR '{connection}' is read-only", param_hint="ID")
        client = await runtime.client(connection)
        return await resolve_conflict(
            store=runtime.store,
            client=client,
            res_type=res_type,
            local=local,
            keep=Keep(keep),
            clock=runtime.clock,
        )
    finally:
        await runtime.aclose()


@conflicts_app.command("resolve")
def conflicts_resolve_command(
    conflict: Annotated[str, typer.Argument(metavar="ID", help="connection:Type/id (see list).")],
    keep: Annotated[
        str,
        typer.Option(
            "--keep",
            help="ours: push CareCoord's version over the EHR's; theirs: take the EHR's version.",
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Resolve one push conflict by keeping ours or theirs."""
    from carecoord.sync.conflicts import parse_conflict_id
    from carecoord.sync.errors import SyncConfigError, SyncError
    from carecoord.sync.pull import error_text

    if keep not in ("ours", "theirs"):
        raise typer.BadParameter("ours or theirs", param_hint="--keep")
    try:
        connection, res_type, local = parse_conflict_id(conflict)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="ID") from None
    settings, engine = _setup(config)
    try:
        outcome = asyncio.run(_resolve(settings, engine, connection, res_type, local, keep))
    except (SyncConfigError, ConfigError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except SyncError as exc:
        err.print(f"[red]not resolved:[/red] {error_text(exc)}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"{conflict}: resolved ({outcome})")
