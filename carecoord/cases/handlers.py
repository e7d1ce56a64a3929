"""Job handlers of case management: the daily monitoring run (``cases.monitor``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from carecoord.cases.config import CaseConfig, load_case_config
from carecoord.cases.service import (
    MONITOR_KIND,
    CaseContext,
    enqueue_monitor,
    ensure_monitoring,
    open_case_ids,
)
from carecoord.fhir.errors import NotFound
from carecoord.fhir.store import FhirStore
from carecoord.jobs import JobContext, Registry
from carecoord.settings import Settings, feature_config_dir

__all__ = ["MonitorHandler", "register_handlers"]


class MonitorHandler:
    """Generate due monitoring Tasks and flag overdue ones for every open case, then schedule
    tomorrow's run (a job keyed by its day: a repeated run or a second worker adds nothing)."""

    def __init__(self, settings: Settings | None) -> None:
        self.settings = settings
        self._config: CaseConfig | None = None

    def config(self) -> CaseConfig:
        if self._config is None:
            folder = (
                feature_config_dir(
                    self.settings.config_dir if self.settings else Path("config"), "cases"
                )
                / "cases"
            )
            self._config = load_case_config(folder)
        return self._config

    def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        store = FhirStore(ctx.engine, clock=ctx.clock)
        case = CaseContext(store, self.config(), ctx.clock(), schedule_monitor=False)
        ids = open_case_ids(case)
        for case_id in ids:
            if ctx.stopping:
                break
            try:
                ensure_monitoring(case, case_id=case_id)
            except NotFound:
                continue  # deleted meanwhile
        if ids:
            store.write(lambda w: enqueue_monitor(w, case.today + timedelta(days=1)))


def register_handlers(registry: Registry, *, settings: Settings | None = None) -> None:
    """Register ``cases.monitor`` on ``registry`` (again: only the settings are updated)."""
    existing = registry.get(MONITOR_KIND)
    if isinstance(existing, MonitorHandler):
        if settings is not None:
            existing.settings = settings
            existing._config = None
        return
    registry.register(MONITOR_KIND, MonitorHandler(settings))
