"""``carecoord transitions``: check the templates, make checklists for past discharges."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from carecoord.settings import ConfigError, Settings, load_settings

__all__ = ["app"]

app = typer.Typer(help="Care-transition checklists.", no_args_is_help=True)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command("check")
def check(
    config: ConfigOption = None,
    organization: Annotated[
        str | None, typer.Option(help="Show the checklist of this organisation's overlay.")
    ] = None,
) -> None:
    """Validate config/transitions/ and show the variants and items in effect."""
    from carecoord.transitions.templates import load_templates

    settings = _settings(config)
    try:
        templates = load_templates(settings.config_dir)
    except ConfigError as exc:
        console.print(f"[red]template error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    setup = templates.for_organization(organization)
    out = Console()
    out.print(
        f"templates valid; time zone {setup.calendar.timezone_name}, language {setup.language}"
    )
    for variant in setup.template.variants:
        table = Table(title=f"variant {variant.name}")
        for column in ("key", "code", "owner", "priority", "required"):
            table.add_column(column)
        for key in variant.items:
            item = setup.template.items[key]
            if key in setup.template.switched_off:
                continue
            table.add_row(
                item.key, item.code.value, item.owner.value, item.priority, str(item.required)
            )
        out.print(table)


@app.command("backfill")
def backfill(
    since: Annotated[str, typer.Option(help="Discharges on or after this date (YYYY-MM-DD).")],
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; write nothing.")] = False,
) -> None:
    """Make (or bring up to date) the checklists of finished encounters discharged since a date.

    Idempotent: a checklist that exists is recomputed, never doubled.
    """
    from carecoord.db import make_engine
    from carecoord.migrate import upgrade
    from carecoord.transitions.checklist import starts_transition
    from carecoord.transitions.handlers import TransitionRuntime
    from carecoord.transitions.service import plan_transition

    try:
        start = date.fromisoformat(since)
    except ValueError as exc:
        console.print("[red]--since must be a date like 2025-07-01[/red]")
        raise typer.Exit(2) from exc
    settings = _settings(config)
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
        runtime = TransitionRuntime.build(settings, engine)
        store = runtime.store
        params = [("status", "finished"), ("date", f"ge{start.isoformat()}"), ("_count", "500")]
        ids: list[str] = []
        cursor: str | None = None
        while True:
            query = store.parse("Encounter", params)
            if cursor is not None:
                query = store.parse("Encounter", [*params, ("_cursor", cursor)])
            page = store.search(query)
            for _, enc_id, content in page.matches:
                encounter = orjson.loads(content)
                if starts_transition(str((encounter.get("class") or {}).get("code", ""))):
                    ids.append(enc_id)
            cursor = page.next_cursor
            if not cursor:
                break
        console.print(f"{len(ids)} discharges since {start.isoformat()}")
        if dry_run:
            return
        made = updated = skipped = 0
        now = datetime.now(UTC)
        for enc_id in ids:
            result = store.write(
                lambda w, e=enc_id: plan_transition(  # type: ignore[misc]
                    w,
                    encounter_id=e,
                    templates=runtime.templates,
                    now=now,
                    risk=runtime.extensions.risk_band,
                )
            )
            if result.skipped:
                skipped += 1
            elif result.created:
                made += 1
            else:
                updated += 1
        console.print(f"checklists made {made}, brought up to date {updated}, skipped {skipped}")
    finally:
        engine.dispose()
