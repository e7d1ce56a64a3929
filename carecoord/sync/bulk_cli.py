"""``carecoord sync bulk``: run (or resume) a FHIR Bulk Data ``$export`` import now."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from carecoord.settings import ConfigError

__all__ = ["bulk_command"]

err = Console(stderr=True, soft_wrap=True)


def bulk_command(
    connection: Annotated[str, typer.Option("--connection", "-n", help="The EHR connection.")],
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="Export this Group (Group/ID/$export).")
    ] = None,
    patient: Annotated[
        bool, typer.Option("--patient", help="Patient-level export (Patient/$export).")
    ] = False,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", help="Resource types (_type; repeatable or comma list)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="_since (default: the last export's transactionTime)."),
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=16, help="Downloads.")] = 3,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
        ),
    ] = None,
) -> None:
    """Kick off (or resume) a bulk export and store every file; without --group or --patient
    the whole system is exported."""
    from carecoord.sync.bulk import BulkOptions, BulkReport, ExportSpec, run_bulk
    from carecoord.sync.cli import _setup
    from carecoord.sync.errors import SyncConfigError, SyncError
    from carecoord.sync.pull import error_text
    from carecoord.sync.runtime import SyncRuntime

    try:
        spec = ExportSpec.of(group=group, patient=patient, types=types or [], since=since)
    except SyncConfigError as exc:
        err.print(f"[red]invalid export:[/red] {exc}")
        raise typer.Exit(2) from exc
    settings, engine = _setup(config)

    async def go() -> BulkReport:
        runtime = SyncRuntime(settings, engine)
        try:
            runtime.connection(connection)
            return await run_bulk(runtime, connection, spec, options=BulkOptions(parallel=parallel))
        finally:
            await runtime.aclose()

    try:
        report = asyncio.run(go())
    except (SyncConfigError, ConfigError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except SyncError as exc:
        err.print(f"[red]bulk import failed:[/red] {error_text(exc)}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    table = Table(title=f"Bulk import {connection} ({spec.scope}), export {report.export_id}")
    for column in ("type", "fetched", "written", "skipped", "rejected"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for res_type, c in sorted(report.by_type.items()):
        table.add_row(res_type, str(c.fetched), str(c.written), str(c.skipped), str(c.rejected))
    Console(width=200).print(table)
    typer.echo(
        f"{'resumed' if report.resumed else 'new'} export; files: {report.files}; "
        f"EHR errors: {report.error_lines} in {report.error_files} files; "
        f"next _since: {report.transaction_time}"
    )
