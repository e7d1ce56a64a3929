"""Job queue / outbox: the ``jobs`` table and the indexes of the claim query.

Revision ID: 0004_jobs
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_jobs"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JobId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN_PREDICATE = "status IN ('ready', 'running', 'dead')"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", JobId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.String(255), nullable=True),
        sa.Column("connection", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.BigInteger(), nullable=False),
        sa.Column("locked_by", sa.String(128), nullable=True),
        sa.Column("locked_until", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("failed_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("kind", "dedup_key", name="uq_jobs_kind_dedup_key"),
        sa.CheckConstraint("status IN ('ready', 'running', 'done', 'dead')", name="ck_jobs_status"),
    )
    # The claim query walks due ready jobs in run_at order, and expired leases; both partial, so
    # finished jobs cost the claim nothing.
    op.create_index(
        "ix_jobs_due",
        "jobs",
        ["run_at", "id"],
        postgresql_where=sa.text("status = 'ready'"),
        sqlite_where=sa.text("status = 'ready'"),
    )
    op.create_index(
        "ix_jobs_lease",
        "jobs",
        ["locked_until"],
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    # Queue status and listings read only unfinished and dead jobs; purge walks finished ones;
    # the last error per kind and connection reads only jobs that ever failed.
    op.create_index(
        "ix_jobs_open",
        "jobs",
        ["status", "kind", "connection"],
        postgresql_where=sa.text(OPEN_PREDICATE),
        sqlite_where=sa.text(OPEN_PREDICATE),
    )
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("status = 'done'"),
        sqlite_where=sa.text("status = 'done'"),
    )
    op.create_index(
        "ix_jobs_failed",
        "jobs",
        ["kind", "connection", "failed_at"],
        postgresql_where=sa.text("failed_at IS NOT NULL"),
        sqlite_where=sa.text("failed_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("jobs")
