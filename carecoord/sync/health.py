"""Per-connection sync health: last success, failures, last error and the saved circuit state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from carecoord.db import read_connection
from carecoord.sync.breaker import CircuitSnapshot, CircuitState
from carecoord.sync.tables import ERROR_LENGTH, sync_connections

__all__ = ["Health", "load_circuit", "load_health", "record_outcome"]


_CLOSED = CircuitSnapshot(CircuitState.CLOSED)


@dataclass(frozen=True, slots=True)
class Health:
    """One row of ``sync_connections`` (times in microseconds since the epoch)."""

    connection: str
    last_success_at: int | None = None
    last_attempt_at: int | None = None
    last_error: str | None = None
    last_error_at: int | None = None
    consecutive_failures: int = 0
    total_failures: int = 0
    circuit: CircuitSnapshot = _CLOSED


def _health(row: Any) -> Health:
    try:
        state = CircuitState(row.circuit_state)
    except ValueError:
        state = CircuitState.CLOSED
    opened = row.circuit_opened_at / 1_000_000 if row.circuit_opened_at is not None else None
    return Health(
        connection=row.connection,
        last_success_at=row.last_success_at,
        last_attempt_at=row.last_attempt_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        consecutive_failures=row.consecutive_failures,
        total_failures=row.total_failures,
        circuit=CircuitSnapshot(state, row.circuit_failures, opened),
    )


def load_health(engine: Engine) -> dict[str, Health]:
    """Every connection that ever synced, by name."""
    with read_connection(engine) as conn:
        return {row.connection: _health(row) for row in conn.execute(select(sync_connections))}


def load_circuit(engine: Engine, connection: str) -> CircuitSnapshot | None:
    """The circuit state saved for ``connection`` (None before its first sync)."""
    t = sync_connections
    with read_connection(engine) as conn:
        row = conn.execute(select(t).where(t.c.connection == connection)).first()
    return _health(row).circuit if row is not None else None


def record_outcome(
    conn: Connection,
    connection: str,
    *,
    ok: bool,
    now: int,
    error: str | None = None,
    circuit: CircuitSnapshot | None = None,
) -> None:
    """Record a pull's success or failure (``error`` without patient data) and the circuit."""
    t = sync_connections
    row = conn.execute(select(t).where(t.c.connection == connection)).first()
    old = _health(row) if row is not None else Health(connection)
    values: dict[str, Any] = {
        "connection": connection,
        "last_attempt_at": now,
        "last_success_at": now if ok else old.last_success_at,
        "last_error": old.last_error if ok else (error or "unknown error")[:ERROR_LENGTH],
        "last_error_at": old.last_error_at if ok else now,
        "consecutive_failures": 0 if ok else old.consecutive_failures + 1,
        "total_failures": old.total_failures + (0 if ok else 1),
    }
    if circuit is not None:
        values["circuit_state"] = circuit.state.value
        values["circuit_failures"] = circuit.failures
        values["circuit_opened_at"] = (
            int(circuit.opened_at * 1_000_000) if circuit.opened_at is not None else None
        )
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(t).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.connection],
        set_={k: v for k, v in values.items() if k != "connection"},
    )
    conn.execute(stmt)
