"""EHR sync: source identities, checkpoints per population and type, runs, connection state.

Revision ID: 0006_sync
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_sync"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_identities",
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("local_id", sa.String(64), nullable=False),
        sa.Column("source_version", sa.String(64), nullable=True),
        sa.Column("source_updated", sa.String(40), nullable=True),
        sa.Column("pulled_at", sa.BigInteger(), nullable=True),
        sa.Column("first_seen_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connection", "res_type", "source_id", name="pk_sync_identities"),
    )
    # Reverse lookups (local id -> source id: open cases, pushes back to the EHR).
    op.create_index(
        "ix_sync_identities_res_type_local_id", "sync_identities", ["res_type", "local_id"]
    )

    op.create_table(
        "sync_checkpoints",
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("population", sa.String(128), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("since", sa.String(40), nullable=True),
        sa.Column("pending_since", sa.String(40), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("done_run", sa.BigInteger(), nullable=True),
        sa.Column("last_chunk", sa.String(255), nullable=True),
        sa.Column("cursor_chunk", sa.String(255), nullable=True),
        sa.Column("cursor_url", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connection", "population", "res_type", name="pk_sync_checkpoints"),
    )

    op.create_table(
        "sync_runs",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("population", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("members", sa.Text(), nullable=False),
        sa.Column("new_members", sa.Text(), nullable=False),
        sa.Column("fetched", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_index(
        "ix_sync_runs_connection_population_id",
        "sync_runs",
        ["connection", "population", "id"],
    )

    op.create_table(
        "sync_connections",
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("last_success_at", sa.BigInteger(), nullable=True),
        sa.Column("last_attempt_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", sa.BigInteger(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("total_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("circuit_state", sa.String(16), nullable=False, server_default="closed"),
        sa.Column("circuit_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("circuit_opened_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("connection", name="pk_sync_connections"),
    )


def downgrade() -> None:
    op.drop_table("sync_connections")
    op.drop_table("sync_runs")
    op.drop_table("sync_checkpoints")
    op.drop_table("sync_identities")
