"""Tables of the API's authorization server: registered clients and seen assertion ids."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, MetaData, String, Table, Text

__all__ = ["api_clients", "api_used_jtis", "metadata"]

metadata = MetaData()

api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("scope", Text(), nullable=False),
    Column("jwks_url", String(2048), nullable=True),
    Column("jwks", Text(), nullable=True),
    Column("tenant", String(128), nullable=True),
    Column("created_at", BigInteger(), nullable=False),
    Column("disabled", Boolean(), nullable=False, default=False),
)

api_used_jtis = Table(
    "api_used_jtis",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger(), nullable=False),
)
