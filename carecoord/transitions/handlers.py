"""Job handlers of care transitions: Encounter events and escalation steps.

``automation.encounter`` (queued by every Encounter write, carecoord/events/encounters.py):

- discharge, or an update of a finished encounter → the checklist is made or recomputed
  (:func:`carecoord.transitions.service.plan_transition`), with the discharge's readmission risk
  when the risk package is configured;
- cancel (A13, a finished encounter under way again, ``entered-in-error``, ``cancelled``) → the
  checklist is revoked with the reason;
- admit → readmission detection, when configured.

``transitions.escalate`` sends one escalation step (carecoord/transitions/escalation.py).

Handlers write through a store that carries the same write hooks as the API's (the Task state
machine, pushes to EHRs), so generated Tasks sync like any other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine

from carecoord.fhir.store import FhirStore, Writer
from carecoord.jobs import JobContext, Registry
from carecoord.settings import Settings, load_settings
from carecoord.transitions.escalation import escalate
from carecoord.transitions.extensions import Extensions, load_extensions
from carecoord.transitions.guard import task_guard
from carecoord.transitions.service import (
    ESCALATE_KIND,
    TransitionResult,
    cancel_transition,
    plan_transition,
    tcm_billing,
)
from carecoord.transitions.templates import TemplateSet, load_templates

__all__ = [
    "ENCOUNTER_KIND",
    "EncounterAutomation",
    "Escalation",
    "TransitionRuntime",
    "automation_store",
    "register_handlers",
]

ENCOUNTER_KIND: Final = "automation.encounter"

_CANCEL_REASONS: Final = {
    "entered-in-error": "The discharge encounter was entered in error",
    "cancelled": "The encounter was cancelled",
}


def automation_store(settings: Settings, engine: Engine) -> FhirStore:
    """A store with the API's write hooks: Task state machine and pushes to EHR connections."""
    from carecoord.smart.connections import load_connections
    from carecoord.sync.push import PushHook

    # Jobs run one at a time per worker: group commit would only add a thread hop per write.
    store = FhirStore(engine, retries=settings.write_retries, group_commit=False)
    store.add_write_hook(task_guard(tcm_billing))
    store.add_write_hook(PushHook(load_connections(settings.config_dir)))
    return store


@dataclass
class TransitionRuntime:
    """What the handlers of one engine share: store, templates and the optional extensions."""

    store: FhirStore
    templates: TemplateSet
    extensions: Extensions

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> TransitionRuntime:
        return cls(
            store=automation_store(settings, engine),
            templates=load_templates(settings.config_dir),
            extensions=load_extensions(settings.config_dir),
        )


@dataclass
class _Runtimes:
    settings: Settings | None = None
    _by_engine: dict[int, TransitionRuntime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, engine: Engine) -> TransitionRuntime:
        with self._lock:
            runtime = self._by_engine.get(id(engine))
            if runtime is None:
                settings = self.settings or load_settings(None)
                runtime = TransitionRuntime.build(settings, engine)
                self._by_engine[id(engine)] = runtime
            return runtime

    def reset(self, settings: Settings | None) -> None:
        with self._lock:
            if settings is not None:
                self.settings = settings
            self._by_engine.clear()


class EncounterAutomation:
    """The ``automation.encounter`` handler."""

    def __init__(self, runtimes: _Runtimes) -> None:
        self.runtimes = runtimes

    def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        runtime = self.runtimes.get(ctx.engine)
        encounter_id = str(payload["encounter_id"])
        event = str(payload.get("event"))
        status = payload.get("status")
        now = ctx.clock()

        def work(w: Writer) -> TransitionResult | None:
            if event == "cancel":
                reason = _CANCEL_REASONS.get(str(status), "The discharge was cancelled")
                return cancel_transition(w, encounter_id=encounter_id, reason=reason)
            if event == "admit":
                runtime.extensions.on_admission(w, encounter_id, now)
                return None
            if event == "discharge" or (event == "update" and status == "finished"):
                return plan_transition(
                    w,
                    encounter_id=encounter_id,
                    templates=runtime.templates,
                    now=now,
                    risk=runtime.extensions.risk_band,
                )
            if event == "transfer":
                runtime.extensions.on_admission(w, encounter_id, now)  # e.g. ED -> inpatient
            return None

        runtime.store.write(work)


class Escalation:
    """The ``transitions.escalate`` handler."""

    def __init__(self, runtimes: _Runtimes) -> None:
        self.runtimes = runtimes

    def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        runtime = self.runtimes.get(ctx.engine)
        now: datetime = ctx.clock()
        runtime.store.write(
            lambda w: escalate(
                w,
                task_id=str(payload["task_id"]),
                step=str(payload["step"]),
                when=str(payload.get("when", "overdue")),
                due=str(payload["due"]),
                notify=[str(n) for n in payload.get("notify") or ["owner"]],
                now=now,
            )
        )


def register_handlers(registry: Registry, *, settings: Settings | None = None) -> None:
    """Register the encounter and escalation handlers (again: only the settings change)."""
    existing = registry.get(ENCOUNTER_KIND)
    if isinstance(existing, EncounterAutomation):
        existing.runtimes.reset(settings)
        return
    runtimes = _Runtimes(settings)
    registry.register(ENCOUNTER_KIND, EncounterAutomation(runtimes))
    registry.register(ESCALATE_KIND, Escalation(runtimes))
