"""The ``carecoord`` command: serve, db upgrade, import."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from carecoord.auth.cli import clients_app
from carecoord.cases.cli import app as cases_app
from carecoord.events.cli import mllp
from carecoord.jobs.cli import jobs_app, worker
from carecoord.pccm.cli import app as pccm_app
from carecoord.settings import ConfigError, Settings, load_settings
from carecoord.smart.cli import ehr_app, keys_app
from carecoord.sync.bulk_cli import bulk_command
from carecoord.sync.cli import sync_app
from carecoord.transitions.cli import app as transitions_app
from carecoord.transitions.readmissions.cli import app as readmissions_app
from carecoord.web.cli import demo

app = typer.Typer(help="CareCoord: care coordination on FHIR R4.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clients_app, name="clients")
app.add_typer(ehr_app, name="ehr")
app.add_typer(keys_app, name="keys")
app.command("worker")(worker)
app.add_typer(jobs_app, name="jobs")
app.command("mllp")(mllp)
sync_app.command("bulk")(bulk_command)
app.add_typer(sync_app, name="sync")
app.add_typer(transitions_app, name="transitions")
app.add_typer(readmissions_app, name="readmissions")
app.add_typer(pccm_app, name="pccm")
app.add_typer(cases_app, name="cases")
app.command("demo")(demo)

console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _migrate(settings: Settings) -> None:
    from carecoord.db import make_engine
    from carecoord.fhir.store import FhirStore
    from carecoord.migrate import upgrade
    from carecoord.transitions.publish import publish_code_systems

    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
        publish_code_systems(FhirStore(engine))
    finally:
        engine.dispose()


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # httpx and httpcore log every request URL at INFO/DEBUG: query strings can name a patient.
    for noisy in ("httpx", "httpcore", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    migrate: Annotated[bool, typer.Option(help="Create or upgrade the database first.")] = True,
) -> None:
    """Run the service (FHIR API at /fhir). The database is created and migrated on first start."""
    import uvicorn

    from carecoord.app import create_app

    settings = _settings(config, host=host, port=port)
    _configure_logging(settings.log_level)
    if migrate:
        _migrate(settings)
    console.print(
        f"CareCoord on http://{settings.host}:{settings.port}/fhir "
        f"(database: {_redact(settings.effective_database_url)})"
    )
    try:
        application = create_app(settings)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _freeze_startup_objects()
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        access_log=False,  # uvicorn's access log prints query strings, which can hold PHI
        log_level=settings.log_level.lower(),
    )


def _freeze_startup_objects() -> None:
    """Keep what start-up built (modules, FHIR models and their checks, the application) out of
    the cyclic garbage collector's full passes: they live as long as the process, and walking
    them (~250,000 objects) paused the event loop for 150-270 ms a few times a minute under load
    (docs/performance.md). Later objects are collected as usual."""
    import gc

    from carecoord.fhir.types import COORDINATED_TYPES
    from carecoord.fhir.validation import warm_models

    warm_models(COORDINATED_TYPES)  # what the first request would otherwise build
    gc.collect()
    gc.freeze()


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create the database or bring it to the newest schema."""
    settings = _settings(config)
    _migrate(settings)
    console.print(f"database at the newest schema: {_redact(settings.effective_database_url)}")


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Bundle/NDJSON files or folders.")],
    config: ConfigOption = None,
) -> None:
    """Import FHIR transaction/collection Bundles, resources and NDJSON files (ids are kept)."""
    from carecoord.db import make_engine
    from carecoord.fhir.store import FhirStore
    from carecoord.importer import count_resources, discover, import_paths

    settings = _settings(config)
    _configure_logging("WARNING")
    _migrate(settings)
    try:
        files = discover(paths)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    engine = make_engine(settings.effective_database_url)
    store = FhirStore(engine, retries=settings.write_retries)
    total = count_resources(files)
    started = time.perf_counter()
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=total)
        report = import_paths(store, files, progress=lambda n: bar.advance(task, n))
    elapsed = time.perf_counter() - started
    engine.dispose()

    table = Table(title=f"Imported {len(files)} file(s)")
    for column in ("type", "created", "updated", "unchanged"):
        table.add_column(column, justify="right" if column != "type" else "left")
    types = sorted(set(report.created) | set(report.updated) | set(report.unchanged))
    for res_type in types:
        table.add_row(
            res_type,
            str(report.created[res_type]),
            str(report.updated[res_type]),
            str(report.unchanged[res_type]),
        )
    table.add_row(
        "total",
        str(sum(report.created.values())),
        str(sum(report.updated.values())),
        str(sum(report.unchanged.values())),
        style="bold",
    )
    Console().print(table)
    rate = report.resources / elapsed if elapsed > 0 else 0.0
    console.print(f"{report.resources} resources in {elapsed:.1f} s ({rate:,.0f} resources/s)")
    for label, message in report.errors:
        console.print(f"[red]failed[/red] {label}: {message}")
    if report.errors:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
