"""Hot-path SQL on the DBAPI connection: the statements every read and write runs.

SQLAlchemy Core costs ~80 µs per execution here against ~10 µs for the driver call, so the few
fixed statements of the store (read, version lookups, inserts, index rows) are plain SQL run on the
driver connection inside the transaction SQLAlchemy opened. Composed queries (search) stay in Core.
See docs/adr/0003-hot-path-sql.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

__all__ = ["Dialect", "dialect_sql"]


class Dialect:
    """SQL text for one database: placeholders and the JSON content column's casts."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        mark = "%s" if postgres else "?"
        content_in = f"CAST({mark} AS JSONB)" if postgres else mark
        content_out = "CAST(content AS TEXT)" if postgres else "content"
        lock = " FOR UPDATE" if postgres else ""
        self.read = (
            f"SELECT version_id, last_updated, deleted, {content_out} FROM resources "
            f"WHERE res_type = {mark} AND res_id = {mark}"
        )
        self.lock_current = (
            f"SELECT rid, version_id, deleted, last_updated, {content_out} FROM resources "
            f"WHERE res_type = {mark} AND res_id = {mark}{lock}"
        )
        self.exists = f"SELECT rid FROM resources WHERE res_type = {mark} AND res_id = {mark}"
        self.types_with_id = (
            f"SELECT res_type FROM resources WHERE res_id = {mark} AND deleted = {mark}"
        )
        # A version row without content that is not a deletion shares the resource row's
        # content (AuditEvents: their only version is always the current one).
        version_content = "COALESCE(v.content, CASE WHEN v.method <> 'DELETE' THEN r.content END)"
        self.vread = (
            f"SELECT v.last_updated, v.method, {content_out.replace('content', version_content)} "
            "FROM resource_versions v JOIN resources r ON r.rid = v.rid "
            f"WHERE r.res_type = {mark} AND r.res_id = {mark} AND v.version_id = {mark}"
        )
        self.insert_resource = (
            "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, content) "
            f"VALUES ({mark}, {mark}, 1, {mark}, {mark}, {content_in}) RETURNING rid"
        )
        self.insert_resource_with_rid = (
            "INSERT INTO resources (rid, res_type, res_id, version_id, last_updated, deleted, "
            f"content) VALUES ({mark}, {mark}, {mark}, 1, {mark}, {mark}, {content_in})"
        )
        self.next_rids = (
            "SELECT nextval(pg_get_serial_sequence('resources', 'rid')) "
            f"FROM generate_series(1, {mark})"
        )
        self.update_resource = (
            f"UPDATE resources SET version_id = {mark}, last_updated = {mark}, deleted = {mark}, "
            f"content = {content_in} WHERE rid = {mark}"
        )
        self.insert_version = (
            "INSERT INTO resource_versions "
            "(rid, version_id, res_type, res_id, last_updated, method, content) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, {mark}, {content_in})"
        )
        self.index_insert = {
            "token": _insert("idx_token", ("system", "code"), mark),
            "string": _insert("idx_string", ("value", "exact"), mark),
            "reference": _insert("idx_reference", ("target_type", "target_id", "url"), mark),
            "date": _insert("idx_date", ("low", "high"), mark),
            "number": _insert("idx_number", ("value", "system", "code"), mark),
        }
        self.index_delete = {
            kind: f"DELETE FROM idx_{kind} WHERE rid = {mark}"
            for kind in ("token", "string", "reference", "date", "number")
        }
        self.advisory_lock = "SELECT pg_advisory_xact_lock(%s)"
        # unnest yields the keys in array order, so they are locked in the caller's order.
        self.advisory_locks = "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k"

    def content_param(self, content: bytes | None) -> Any:
        if content is None:
            return None
        return content.decode("utf-8") if self.postgres else content

    def content_value(self, value: Any) -> bytes | None:
        if value is None:
            return None
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _insert(table: str, columns: Sequence[str], mark: str) -> str:
    names = ", ".join(("rid", "res_type", "param", *columns))
    marks = ", ".join([mark] * (3 + len(columns)))
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"


@cache
def dialect_sql(postgres: bool) -> Dialect:
    return Dialect(postgres)
