"""Case-management API routes."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from carecoord.settings import Settings

__all__ = ["install"]


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Add this package's routes (and start-up checks) to ``app``."""
