"""Job handlers of case management."""

from __future__ import annotations

from carecoord.jobs import Registry
from carecoord.settings import Settings

__all__ = ["register_handlers"]


def register_handlers(registry: Registry, *, settings: Settings | None = None) -> None:
    """Register this package's job handlers on ``registry``."""
