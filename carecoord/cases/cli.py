"""``carecoord cases``: check the configuration, run monitoring now, show caseloads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from carecoord.cases.config import CaseConfig, CaseConfigError, load_case_config
from carecoord.settings import Settings, feature_config_dir

__all__ = ["app"]

app = typer.Typer(help="Case management.", no_args_is_help=True)
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


def _config(settings: Settings) -> CaseConfig:
    try:
        return load_case_config(feature_config_dir(settings.config_dir, "cases") / "cases")
    except CaseConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc


def _setup(config: Path | None) -> tuple[Settings, Engine]:
    from carecoord.cli import _configure_logging, _migrate, _settings
    from carecoord.db import make_engine

    settings = _settings(config)
    _configure_logging(settings.log_level)
    _migrate(settings)
    return settings, make_engine(settings.effective_database_url, pool_size=settings.db_pool_size)


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate config/cases (models, caseloads, intake, needs, Questionnaires)."""
    from carecoord.cli import _settings

    loaded = _config(_settings(config))
    typer.echo(
        f"ok: {len(loaded.models)} models, {len(loaded.questionnaires)} questionnaires, "
        f"{len(loaded.needs)} need rules"
    )


@app.command()
def monitor(config: ConfigOption = None) -> None:
    """Generate due monitoring Tasks and flag overdue ones for every open case, now."""
    from carecoord.cases.service import CaseContext, ensure_monitoring, open_case_ids
    from carecoord.fhir.store import FhirStore

    settings, engine = _setup(config)
    ctx = CaseContext(FhirStore(engine), _config(settings), datetime.now(UTC))
    ids = open_case_ids(ctx)
    made = sum(len(ensure_monitoring(ctx, case_id=case_id)) for case_id in ids)
    typer.echo(f"{len(ids)} open cases, {made} new monitoring tasks")


@app.command()
def caseloads(
    config: ConfigOption = None,
    organization: Annotated[str | None, typer.Option(help="Organization/id")] = None,
) -> None:
    """Load, cap and cases per case manager."""
    from carecoord.cases import service
    from carecoord.fhir.store import FhirStore

    settings, engine = _setup(config)
    ctx = service.CaseContext(FhirStore(engine), _config(settings), datetime.now(UTC))
    table = Table("case manager", "cases", "load", "cap", "above cap")
    for row in service.caseloads(ctx, organization=organization):
        table.add_row(
            row["careManager"],
            str(row["cases"]),
            f"{row['load']:g}",
            f"{row['cap']:g}",
            "YES" if row["aboveCap"] else "",
        )
    Console().print(table)
