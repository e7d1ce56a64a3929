"""Sync's own tables: source identities, checkpoints, runs and per-connection state.

Times are integers, microseconds since the Unix epoch (UTC), like the store's. EHR instants
(``since``) are kept as the FHIR instant text the EHR's clock produced.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, text

from carecoord.db import metadata

__all__ = [
    "ERROR_LENGTH",
    "sync_checkpoints",
    "sync_connections",
    "sync_identities",
    "sync_runs",
]

ERROR_LENGTH: Final = 500
RowId = BigInteger().with_variant(Integer(), "sqlite")

#: (connection, source type, source id) -> local id. ``pulled_at`` is None while the resource is
#: only referenced by pulled ones (its local id is already fixed, see identity.py).
sync_identities = Table(
    "sync_identities",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("res_type", String(64), primary_key=True),
    Column("source_id", String(64), primary_key=True),
    Column("local_id", String(64), nullable=False),
    Column("source_version", String(64), nullable=True),
    Column("source_updated", String(40), nullable=True),
    Column("pulled_at", BigInteger(), nullable=True),
    Column("first_seen_at", BigInteger(), nullable=False),
    Index("ix_sync_identities_res_type_local_id", "res_type", "local_id"),
)

#: Progress of one (connection, population, type): the completed point (``since``) and, while a
#: run is under way, where it is (last completed chunk, the next page of the current one).
sync_checkpoints = Table(
    "sync_checkpoints",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("population", String(128), primary_key=True),
    Column("res_type", String(64), primary_key=True),
    Column("since", String(40), nullable=True),
    Column("pending_since", String(40), nullable=True),
    Column("run_id", BigInteger(), nullable=True),
    Column("done_run", BigInteger(), nullable=True),
    Column("last_chunk", String(255), nullable=True),
    Column("cursor_chunk", String(255), nullable=True),
    Column("cursor_url", Text(), nullable=True),
    Column("updated_at", BigInteger(), nullable=False),
)

#: One pull of a (connection, population); an unfinished one is resumed by the next pull.
sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("connection", String(64), nullable=False),
    Column("population", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # running | ok | failed
    Column("started_at", BigInteger(), nullable=False),
    Column("finished_at", BigInteger(), nullable=True),
    Column("members", Text(), nullable=False),  # JSON: source patient ids of the population
    Column("new_members", Text(), nullable=False),  # JSON: those not in the last completed run
    Column("fetched", Integer(), nullable=False),
    Column("written", Integer(), nullable=False),
    Column("skipped", Integer(), nullable=False),
    Column("rejected", Integer(), nullable=False),
    Column("error", String(ERROR_LENGTH), nullable=True),
    Index("ix_sync_runs_connection_population_id", "connection", "population", "id"),
)

#: What ``sync status`` shows per connection, and the saved circuit breaker.
sync_connections = Table(
    "sync_connections",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("last_success_at", BigInteger(), nullable=True),
    Column("last_attempt_at", BigInteger(), nullable=True),
    Column("last_error", String(ERROR_LENGTH), nullable=True),
    Column("last_error_at", BigInteger(), nullable=True),
    Column("consecutive_failures", Integer(), nullable=False, server_default=text("0")),
    Column("total_failures", Integer(), nullable=False, server_default=text("0")),
    Column("circuit_state", String(16), nullable=False, server_default=text("'closed'")),
    Column("circuit_failures", Integer(), nullable=False, server_default=text("0")),
    Column("circuit_opened_at", BigInteger(), nullable=True),
)
