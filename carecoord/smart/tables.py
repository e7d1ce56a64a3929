"""Tables of the SMART client: pending launches and user sessions.

Times are integer seconds since the Unix epoch (UTC), like the JWT claims they come from. Neither a
``state`` nor a session id is stored: only their SHA-256, so a copy of the database opens nothing.
Tokens and PKCE verifiers are stored encrypted (:class:`carecoord.crypto.Encryptor`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from carecoord.db import metadata

__all__ = ["smart_launches", "smart_sessions"]

smart_launches = Table(
    "smart_launches",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("connection", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # "ehr" | "standalone"
    Column("browser_hash", String(64), nullable=False),
    Column("verifier_enc", Text, nullable=False),
    Column("nonce", String(128), nullable=True),
    Column("redirect_uri", String(2048), nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_smart_launches_expires_at", "expires_at"),
)

smart_sessions = Table(
    "smart_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("connection", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("patient", String(255), nullable=True),
    Column("encounter", String(255), nullable=True),
    Column("fhir_context", Text, nullable=False),  # JSON array
    Column("need_patient_banner", Boolean, nullable=False),
    Column("fhir_user", String(2048), nullable=True),
    Column("access_token_enc", Text, nullable=False),
    Column("refresh_token_enc", Text, nullable=True),
    Column("token_expires_at", BigInteger, nullable=True),
    Column("token_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_smart_sessions_expires_at", "expires_at"),
)
