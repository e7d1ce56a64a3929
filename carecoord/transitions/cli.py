"""``carecoord transitions``: templates and checklists."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(help="Care-transition checklists.", no_args_is_help=True)
