"""Tables of the FHIR store: current resources, every version, and the search index.

Times are integers: microseconds since the Unix epoch, UTC. They compare and index the same way on
SQLite and PostgreSQL. Index strings use the "C" collation on PostgreSQL so that prefix ranges match
SQLite's byte order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import expression
from sqlalchemy.types import TypeDecorator

from carecoord.db import metadata

__all__ = [
    "ResourceJSON",
    "idx_date",
    "idx_number",
    "idx_reference",
    "idx_string",
    "idx_token",
    "index_tables",
    "resource_versions",
    "resources",
]

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
RowId = BigInteger().with_variant(Integer(), "sqlite")
IndexString = String(255).with_variant(postgresql.VARCHAR(255, collation="C"), "postgresql")
LongString = String(2048).with_variant(postgresql.VARCHAR(2048, collation="C"), "postgresql")


class ResourceJSON(TypeDecorator[bytes]):
    """Resource JSON: bytes in and out; JSONB on PostgreSQL, a BLOB on SQLite.

    On PostgreSQL the column is read back as ``content::text`` so that the driver never parses it;
    the served bytes are PostgreSQL's canonical rendering of the stored document.
    """

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(LargeBinary())

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":

            def to_text(value: bytes | None) -> str | None:
                return None if value is None else value.decode("utf-8")

            return to_text
        return None

    def bind_expression(self, bindvalue: Any) -> Any:
        return _JsonbBind(bindvalue)

    def column_expression(self, col: Any) -> Any:
        return _JsonbText(col)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name == "postgresql":

            def to_bytes(value: str | None) -> bytes | None:
                return None if value is None else value.encode("utf-8")

            return to_bytes
        return None


class _JsonbBind(expression.ColumnElement[Any]):
    inherit_cache = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.type = inner.type


class _JsonbText(expression.ColumnElement[Any]):
    inherit_cache = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.type = inner.type


def _compile_bind(element: _JsonbBind, compiler: Any, **kw: Any) -> str:
    inner = compiler.process(element.inner, **kw)
    return f"CAST({inner} AS JSONB)" if compiler.dialect.name == "postgresql" else str(inner)


def _compile_text(element: _JsonbText, compiler: Any, **kw: Any) -> str:
    inner = compiler.process(element.inner, **kw)
    return f"CAST({inner} AS TEXT)" if compiler.dialect.name == "postgresql" else str(inner)


def _register() -> None:
    from sqlalchemy.ext.compiler import compiles

    compiles(_JsonbBind)(_compile_bind)
    compiles(_JsonbText)(_compile_text)


_register()

resources = Table(
    "resources",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", ResourceJSON(), nullable=True),
    UniqueConstraint("res_type", "res_id"),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
    Index("ix_resources_res_id", "res_id"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("rid", RowId, primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", ResourceJSON(), nullable=True),
    Index("ix_resource_versions_type_updated", "res_type", "last_updated"),
    Index("ix_resource_versions_updated", "last_updated"),
)

idx_token = Table(
    "idx_token",
    metadata,
    Column("rid", RowId, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", LongString, nullable=True),
    Column("code", IndexString, nullable=True),
    Index("ix_idx_token_lookup", "res_type", "param", "code", "system"),
    Index("ix_idx_token_rid", "rid"),
)

idx_string = Table(
    "idx_string",
    metadata,
    Column("rid", RowId, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("value", IndexString, nullable=False),
    Column("exact", LongString, nullable=False),
    Index("ix_idx_string_lookup", "res_type", "param", "value"),
    Index("ix_idx_string_rid", "rid"),
)

idx_reference = Table(
    "idx_reference",
    metadata,
    Column("rid", RowId, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", LongString, nullable=True),
    Index("ix_idx_reference_lookup", "res_type", "param", "target_id", "target_type"),
    Index("ix_idx_reference_target", "target_type", "target_id"),
    Index("ix_idx_reference_rid", "rid"),
)

idx_date = Table(
    "idx_date",
    metadata,
    Column("rid", RowId, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    Index("ix_idx_date_low", "res_type", "param", "low"),
    Index("ix_idx_date_high", "res_type", "param", "high"),
    Index("ix_idx_date_rid", "rid"),
)

idx_number = Table(
    "idx_number",
    metadata,
    Column("rid", RowId, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("value", Float, nullable=False),
    Column("system", LongString, nullable=True),
    Column("code", IndexString, nullable=True),
    Index("ix_idx_number_lookup", "res_type", "param", "value"),
    Index("ix_idx_number_rid", "rid"),
)

index_tables: dict[str, Table] = {
    "token": idx_token,
    "string": idx_string,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
}
