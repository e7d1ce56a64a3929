"""Bulk Data import: exports (status URL, manifest), output files' line offsets, next _since.

Revision ID: 0008_bulk
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_bulk"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bulk_exports",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(160), nullable=False),
        sa.Column("types", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_url", sa.Text(), nullable=True),
        sa.Column("request_since", sa.String(40), nullable=True),
        sa.Column("transaction_time", sa.String(40), nullable=True),
        sa.Column("requires_token", sa.Boolean(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=True),
        sa.Column("progress", sa.String(100), nullable=True),
        sa.Column("error_files", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error_lines", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bulk_exports"),
    )
    op.create_index(
        "ix_bulk_exports_connection_scope_id", "bulk_exports", ["connection", "scope", "id"]
    )

    op.create_table(
        "bulk_files",
        sa.Column("export_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("expected", sa.Integer(), nullable=True),
        sa.Column("line_offset", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("fetched", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("export_id", "seq", name="pk_bulk_files"),
    )

    op.create_table(
        "bulk_checkpoints",
        sa.Column("connection", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(160), nullable=False),
        sa.Column("types", sa.String(512), nullable=False),
        sa.Column("since", sa.String(40), nullable=False),
        sa.Column("export_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connection", "scope", "types", name="pk_bulk_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("bulk_checkpoints")
    op.drop_table("bulk_files")
    op.drop_index("ix_bulk_exports_connection_scope_id", table_name="bulk_exports")
    op.drop_table("bulk_exports")
