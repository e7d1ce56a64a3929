"""``carecoord cases``."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(help="Case management.", no_args_is_help=True)
