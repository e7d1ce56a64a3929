"""``carecoord readmissions``: scan stored history for 30-day readmissions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app"]

app = typer.Typer(help="30-day readmissions.", no_args_is_help=True)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


@app.command("scan")
def scan_command(
    score: Annotated[
        bool, typer.Option("--score/--no-score", help="Also score every past discharge.")
    ] = False,
    tasks: Annotated[
        bool,
        typer.Option("--tasks/--no-tasks", help="Open review Tasks for the readmissions found."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Find every readmission in the stored data (idempotent) and print a summary."""
    from carecoord.fhir.store import FhirStore, Writer
    from carecoord.jobs.cli import _engine
    from carecoord.transitions.readmissions.config import RiskConfigError
    from carecoord.transitions.readmissions.scan import scan
    from carecoord.transitions.risk.config import load_risk_config
    from carecoord.transitions.risk.service import assess_discharge

    settings, engine = _engine(config)
    try:
        try:
            risk = load_risk_config(settings.config_dir)
        except RiskConfigError as exc:
            console.print(f"[red]configuration error:[/red] {exc}")
            raise typer.Exit(2) from exc
        store = FhirStore(engine, group_commit=False)
        now = datetime.now(UTC)

        def scorer(w: Writer, encounter_id: str, when: datetime) -> object:
            return assess_discharge(w, encounter_id=encounter_id, now=when, config=risk)

        summary = scan(
            store,
            risk.readmissions,
            now=now,
            review_tasks=tasks,
            score=scorer if score else None,
        )
    finally:
        engine.dispose()
    table = Table(title="Readmission scan")
    table.add_column("measure")
    table.add_column("count", justify="right")
    for key, value in summary.as_json().items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
