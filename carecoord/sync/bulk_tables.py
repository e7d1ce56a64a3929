"""Bulk Data tables: exports (status URL, manifest), output files' line offsets, next ``_since``."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text, text

from carecoord.db import metadata
from carecoord.sync.tables import ERROR_LENGTH

__all__ = ["bulk_checkpoints", "bulk_exports", "bulk_files"]

RowId = BigInteger().with_variant(Integer(), "sqlite")

#: One ``$export`` of a connection and scope (``system``, ``patient`` or ``group:ID``) and type
#: list (comma-joined, sorted; empty for all). ``status``: polling | downloading | done | failed.
#: The status URL is kept while polling, the manifest once complete, so a restart re-polls or
#: reuses the manifest instead of kicking off again.
bulk_exports = Table(
    "bulk_exports",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("connection", String(64), nullable=False),
    Column("scope", String(160), nullable=False),
    Column("types", String(512), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_url", Text(), nullable=True),
    Column("request_since", String(40), nullable=True),
    Column("transaction_time", String(40), nullable=True),
    Column("requires_token", Boolean(), nullable=False),
    Column("manifest", Text(), nullable=True),
    Column("progress", String(100), nullable=True),
    Column("error_files", Integer(), nullable=False, server_default=text("0")),
    Column("error_lines", Integer(), nullable=False, server_default=text("0")),
    Column("error", String(ERROR_LENGTH), nullable=True),
    Column("started_at", BigInteger(), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
    Column("finished_at", BigInteger(), nullable=True),
    Index("ix_bulk_exports_connection_scope_id", "connection", "scope", "id"),
)

#: One output file of an export's manifest: ``line_offset`` lines are stored (committed with the
#: resources they hold), ``done`` once the whole file is.
bulk_files = Table(
    "bulk_files",
    metadata,
    Column("export_id", BigInteger(), primary_key=True),
    Column("seq", Integer(), primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("url", Text(), nullable=False),
    Column("expected", Integer(), nullable=True),
    Column("line_offset", BigInteger(), nullable=False),
    Column("done", Boolean(), nullable=False),
    Column("fetched", Integer(), nullable=False),
    Column("written", Integer(), nullable=False),
    Column("skipped", Integer(), nullable=False),
    Column("rejected", Integer(), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
)

#: The next ``_since`` of a (connection, scope, types): the last complete export's
#: ``transactionTime``.
bulk_checkpoints = Table(
    "bulk_checkpoints",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("scope", String(160), primary_key=True),
    Column("types", String(512), primary_key=True),
    Column("since", String(40), nullable=False),
    Column("export_id", BigInteger(), nullable=False),
    Column("updated_at", BigInteger(), nullable=False),
)
