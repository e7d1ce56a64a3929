"""``carecoord pccm``."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(help="PCCM primary-care-provider assignment.", no_args_is_help=True)
