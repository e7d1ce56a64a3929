"""``carecoord pccm``: batch assignment with its report, member choice, a PCP leaving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from carecoord.fhir.errors import FhirError
from carecoord.settings import ConfigError, Settings

if TYPE_CHECKING:
    from carecoord.pccm.service import PccmService

__all__ = ["app"]

app = typer.Typer(help="PCCM primary-care-provider assignment.", no_args_is_help=True)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]
ProgramOption = Annotated[str, typer.Option("--program", "-p", help="Program name (file stem).")]


def _open(config: Path | None) -> tuple[Settings, Engine]:
    from carecoord.cli import _migrate, _settings
    from carecoord.db import make_engine

    settings = _settings(config)
    _migrate(settings)
    return settings, make_engine(settings.effective_database_url, pool_size=2)


def _service(settings: Settings, engine: Engine) -> PccmService:
    from carecoord.pccm.program import load_programs
    from carecoord.pccm.service import PccmService
    from carecoord.transitions.handlers import automation_store

    try:
        programs = load_programs(settings.config_dir)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    return PccmService(automation_store(settings, engine), programs)


@app.command("assign")
def assign(
    program: ProgramOption,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide and report, write nothing.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: ./pccm-report-PROGRAM).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Assign a PCP to every enrolled member who has none; write a CSV and JSON report."""
    from carecoord.pccm.report import batch_report, write_report

    settings, engine = _open(config)
    try:
        service = _service(settings, engine)
        with Progress(
            TextColumn("assigning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("assign", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            try:
                batch = service.run_batch(program, dry_run=dry_run, progress=progress)
            except FhirError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(1) from exc
        world = batch.world
        decisions = [o.decision for o in batch.outcomes]
        report = batch_report(
            world.program,
            decisions,
            world.directory,
            world.panels,
            dry_run=dry_run,
            written=sum(o.written for o in batch.outcomes),
        )
        folder = out or Path(f"pccm-report-{program}")
        write_report(report, folder)
    finally:
        engine.dispose()
    label = "dry run: would assign" if dry_run else "assigned"
    console.print(
        f"{label} {report['assigned']} of {report['members']} members; "
        f"{len(report['unassigned'])} unassigned; {len(report['outsideStandard'])} outside the "
        f"time/distance standard; report in {folder}"
    )
    for rule, n in report["perRule"].items():
        console.print(f"  {rule}: {n}")


@app.command("choose")
def choose(
    program: ProgramOption,
    patient: Annotated[str, typer.Argument(help="Patient id.")],
    pcp: Annotated[str, typer.Argument(help="PractitionerRole id of the chosen PCP.")],
    cause: Annotated[
        str | None, typer.Option(help="Reason of a change for cause (allowed any time).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Record a member's choice or change of PCP."""
    settings, engine = _open(config)
    try:
        outcome = _service(settings, engine).choose(program, patient, pcp, cause=cause)
    except FhirError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    console.print(f"assigned ({outcome.decision.rule}); notice {outcome.source_id}")


@app.command("pcp-leaves")
def pcp_leaves(
    program: ProgramOption,
    pcp: Annotated[str, typer.Argument(help="PractitionerRole id of the PCP leaving.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept with the PCP's status).")] = None,
    config: ConfigOption = None,
) -> None:
    """Take a PCP out of the program and reassign their panel by the program's rules."""
    settings, engine = _open(config)
    try:
        outcomes = _service(settings, engine).pcp_leaves(program, pcp, reason=reason)
    except FhirError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    moved = sum(1 for o in outcomes if o.decision.pcp)
    console.print(
        f"reassigned {moved} of {len(outcomes)} members; {len(outcomes) - moved} left unassigned"
    )
