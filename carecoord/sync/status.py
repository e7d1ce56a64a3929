"""Sync status per connection: last success, lag, queue depth, failures, last error, circuit,
open push conflicts.

Shared by ``carecoord sync status`` and ``GET /sync/status``; carries no patient data (errors are
recorded without it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from carecoord.db import read_connection
from carecoord.jobs import QueueCounts, stats
from carecoord.jobs.clock import Clock, from_micros, utc_now
from carecoord.sync.breaker import CircuitState
from carecoord.sync.config import SyncConfig
from carecoord.sync.health import Health, load_health
from carecoord.sync.push_tables import push_state
from carecoord.sync.tables import sync_runs

__all__ = ["ConnectionStatus", "PopulationStatus", "sync_status"]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _time(micros: int | None) -> datetime | None:
    return from_micros(micros) if micros is not None else None


@dataclass(frozen=True, slots=True)
class PopulationStatus:
    """The latest run of one population and its last completed one."""

    population: str
    last_status: str
    last_run_at: datetime
    last_success: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "population": self.population,
            "last_status": self.last_status,
            "last_run_at": _iso(self.last_run_at),
            "last_success": _iso(self.last_success),
        }


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """What an operator needs to know about one connection's sync."""

    connection: str
    configured: bool
    last_success: datetime | None
    lag_seconds: float | None
    queue: QueueCounts
    consecutive_failures: int
    total_failures: int
    last_error: str | None
    last_error_at: datetime | None
    circuit: str
    populations: list[PopulationStatus] = field(default_factory=list)
    conflicts: int = 0  # open push conflicts (``sync conflicts list``)

    def as_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "configured": self.configured,
            "last_success": _iso(self.last_success),
            "lag_seconds": round(self.lag_seconds, 1) if self.lag_seconds is not None else None,
            "queue": {
                "ready": self.queue.ready,
                "due": self.queue.due,
                "running": self.queue.running,
                "dead": self.queue.dead,
            },
            "failures": {
                "consecutive": self.consecutive_failures,
                "total": self.total_failures,
            },
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "circuit": self.circuit,
            "populations": [p.as_json() for p in self.populations],
            "conflicts": self.conflicts,
        }


def _populations(engine: Engine) -> dict[str, list[PopulationStatus]]:
    r = sync_runs
    latest = (
        select(func.max(r.c.id).label("id"))
        .group_by(r.c.connection, r.c.population)
        .scalar_subquery()
    )
    successes = (
        select(r.c.connection, r.c.population, func.max(r.c.finished_at).label("at"))
        .where(r.c.status == "ok")
        .group_by(r.c.connection, r.c.population)
    )
    found: dict[str, list[PopulationStatus]] = {}
    with read_connection(engine) as conn:
        ok_at = {(row.connection, row.population): row.at for row in conn.execute(successes)}
        rows = conn.execute(
            select(r.c.connection, r.c.population, r.c.status, r.c.started_at)
            .where(r.c.id.in_(latest))
            .order_by(r.c.connection, r.c.population)
        )
        for row in rows:
            found.setdefault(row.connection, []).append(
                PopulationStatus(
                    population=row.population,
                    last_status=row.status,
                    last_run_at=from_micros(row.started_at),
                    last_success=_time(ok_at.get((row.connection, row.population))),
                )
            )
    return found


def _conflicts(engine: Engine) -> dict[str, int]:
    t = push_state
    with read_connection(engine) as conn:
        rows = conn.execute(
            select(t.c.connection, func.count())
            .where(t.c.conflict.is_(True))
            .group_by(t.c.connection)
        )
        return {row[0]: int(row[1]) for row in rows}


def _circuit(health: Health, config: SyncConfig, now: float) -> str:
    snapshot = health.circuit
    if snapshot.state is CircuitState.CLOSED or snapshot.opened_at is None:
        return CircuitState.CLOSED.value
    cooldown = config.for_connection(health.connection).circuit_cooldown_seconds
    if now >= snapshot.opened_at + cooldown:
        return CircuitState.HALF_OPEN.value
    return CircuitState.OPEN.value


def sync_status(
    engine: Engine,
    connections: Iterable[str],
    *,
    config: SyncConfig | None = None,
    clock: Clock = utc_now,
) -> list[ConnectionStatus]:
    """The status of the configured ``connections`` and of any other that synced before."""
    config = config or SyncConfig()
    configured = set(connections)
    health = load_health(engine)
    queue = stats(engine, clock=clock).by_connection
    populations = _populations(engine)
    conflicts = _conflicts(engine)
    now = clock()
    result = []
    for name in sorted(configured | set(health) | set(populations) | set(conflicts)):
        h = health.get(name, Health(name))
        last_success = _time(h.last_success_at)
        result.append(
            ConnectionStatus(
                connection=name,
                configured=name in configured,
                last_success=last_success,
                lag_seconds=(now - last_success).total_seconds() if last_success else None,
                queue=queue.get(name, QueueCounts()),
                consecutive_failures=h.consecutive_failures,
                total_failures=h.total_failures,
                last_error=h.last_error,
                last_error_at=_time(h.last_error_at),
                circuit=_circuit(h, config, now.timestamp()),
                populations=populations.get(name, []),
                conflicts=conflicts.get(name, 0),
            )
        )
    return result
