"""``carecoord demo``: the whole product on a laptop."""

from __future__ import annotations

import typer

__all__ = ["demo"]


def demo() -> None:
    """Run the demo."""
    raise typer.Exit(1)
