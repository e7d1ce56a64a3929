"""FHIR store: current resources, every version, and the search index.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
IndexString = sa.String(255).with_variant(postgresql.VARCHAR(255, collation="C"), "postgresql")
LongString = sa.String(2048).with_variant(postgresql.VARCHAR(2048, collation="C"), "postgresql")
Content = sa.LargeBinary().with_variant(postgresql.JSONB(), "postgresql")


def _index_table(name: str, *columns: sa.Column[object]) -> None:
    op.create_table(
        name,
        sa.Column("rid", RowId, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        *columns,
    )
    op.create_index(f"ix_{name}_rid", name, ["rid"])


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("rid", RowId, primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", Content, nullable=True),
        sa.PrimaryKeyConstraint("rid", name="pk_resources"),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resources_res_type_res_id"),
    )
    op.create_index("ix_resources_type_updated", "resources", ["res_type", "last_updated"])
    op.create_index("ix_resources_res_id", "resources", ["res_id"])

    op.create_table(
        "resource_versions",
        sa.Column("rid", RowId, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", Content, nullable=True),
        sa.PrimaryKeyConstraint("rid", "version_id", name="pk_resource_versions"),
    )
    op.create_index(
        "ix_resource_versions_type_updated", "resource_versions", ["res_type", "last_updated"]
    )
    op.create_index("ix_resource_versions_updated", "resource_versions", ["last_updated"])

    _index_table(
        "idx_token",
        sa.Column("system", LongString, nullable=True),
        sa.Column("code", IndexString, nullable=True),
    )
    op.create_index("ix_idx_token_lookup", "idx_token", ["res_type", "param", "code", "system"])

    _index_table(
        "idx_string",
        sa.Column("value", IndexString, nullable=False),
        sa.Column("exact", LongString, nullable=False),
    )
    op.create_index("ix_idx_string_lookup", "idx_string", ["res_type", "param", "value"])

    _index_table(
        "idx_reference",
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("url", LongString, nullable=True),
    )
    op.create_index(
        "ix_idx_reference_lookup",
        "idx_reference",
        ["res_type", "param", "target_id", "target_type"],
    )
    op.create_index("ix_idx_reference_target", "idx_reference", ["target_type", "target_id"])

    _index_table(
        "idx_date",
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_idx_date_low", "idx_date", ["res_type", "param", "low"])
    op.create_index("ix_idx_date_high", "idx_date", ["res_type", "param", "high"])

    _index_table(
        "idx_number",
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("system", LongString, nullable=True),
        sa.Column("code", IndexString, nullable=True),
    )
    op.create_index("ix_idx_number_lookup", "idx_number", ["res_type", "param", "value"])


def downgrade() -> None:
    for name in ("idx_number", "idx_date", "idx_reference", "idx_string", "idx_token"):
        op.drop_table(name)
    op.drop_table("resource_versions")
    op.drop_table("resources")
