"""Access to CareCoord's own API: registered system clients and used assertion ids.

Revision ID: 0003_api_auth
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_api_auth"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_clients",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("jwks_url", sa.String(2048), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "api_used_jtis",
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_api_used_jtis_expires_at", "api_used_jtis", ["expires_at"])


def downgrade() -> None:
    op.drop_table("api_used_jtis")
    op.drop_table("api_clients")
