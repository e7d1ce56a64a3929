"""``carecoord readmissions``."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(help="30-day readmissions.", no_args_is_help=True)
