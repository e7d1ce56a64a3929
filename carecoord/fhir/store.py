"""The versioned FHIR resource store.

Every write runs through a :class:`Writer` inside one database transaction (``FhirStore.write``),
retried as a whole on serialization conflicts: the resource row, its version row and its
search-index rows change together or not at all. The store trusts its input: validation happens at
the edge (the REST router, the bundle processor and the importer call
:mod:`carecoord.fhir.validation`).

Concurrency: on SQLite writers are serialised by ``BEGIN IMMEDIATE``. On PostgreSQL an update locks
the resource row (``FOR UPDATE``) so versions have no gaps and ``If-Match`` is exact, and a
conditional create or update takes a transaction advisory lock on its normalised query so that
concurrent identical requests make one resource.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from sqlalchemy import Connection, Engine, and_, false, func, or_, select
from uuid_utils import uuid7

from carecoord.db import (
    RetryableConflict,
    group_committer,
    is_postgres,
    read_connection,
    run_write,
)
from carecoord.fhir.access import TENANT_SYSTEM, AccessPolicy, RowFilter
from carecoord.fhir.aread import AsyncReader
from carecoord.fhir.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    Unavailable,
)
from carecoord.fhir.search import (
    Access,
    SearchPage,
    SearchQuery,
    count_matches,
    find_ids,
    parse_search,
    run_search,
)
from carecoord.fhir.searchparams import (
    KINDS,
    IndexRows,
    SearchRegistry,
    default_registry,
    extract_index,
)
from carecoord.fhir.sql import Dialect, dialect_sql
from carecoord.fhir.tables import idx_reference, resource_versions, resources
from carecoord.fhir.values import date_range, format_instant, to_micros

__all__ = [
    "Clock",
    "FhirStore",
    "HistoryEntry",
    "HistoryPage",
    "StoredResource",
    "WriteHook",
    "WriteResult",
    "Writer",
    "conditional_lock_key",
    "new_id",
]

T = TypeVar("T")
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A server-assigned logical id: a UUIDv7 (RFC 9562), random but time-ordered, so that the
    ids of resources created one after another sit next to each other in the store's indexes
    (by id, and by reference from other resources) instead of each landing on a page of its own,
    as random UUIDv4s do."""
    return str(uuid7())


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored: its JSON bytes and version metadata."""

    res_type: str
    res_id: str
    version_id: int
    last_updated: int  # microseconds since the epoch
    content: bytes | None  # None for a deletion

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_modified(self) -> str:
        moment = datetime.fromtimestamp(self.last_updated / 1_000_000, UTC)
        return format_datetime(moment, usegmt=True)

    @property
    def location(self) -> str:
        return f"{self.res_type}/{self.res_id}/_history/{self.version_id}"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did: ``created`` (201), updated or found (200), ``unchanged`` (no version)."""

    resource: StoredResource
    created: bool = False
    unchanged: bool = False

    @property
    def status(self) -> int:
        return 201 if self.created else 200


#: Runs inside the transaction after a Writer created or updated a resource (not for unchanged
#: writes, deletes or AuditEvents): (writer, type, the new version, the previous version's
#: ``status`` or None). Raising rolls the whole unit of work back.
WriteHook = Callable[["Writer", str, StoredResource, str | None], None]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    resource: StoredResource
    method: str  # POST, PUT or DELETE


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    next_cursor: str | None


def _with_meta(
    res_type: str, res_id: str, resource: dict[str, Any], version: int, last_updated: str
) -> bytes:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    body: dict[str, Any] = {"resourceType": res_type, "id": res_id, "meta": meta}
    for key, value in resource.items():
        if key not in body:
            body[key] = value
    return orjson.dumps(body)


def _same_content(old: dict[str, Any], resource: dict[str, Any]) -> bool:
    """``resource`` says what the stored JSON ``old`` says (server-set meta aside)."""
    old = dict(old)
    old_meta = {k: v for k, v in (old.pop("meta", None) or {}).items() if k not in _SERVER_META}
    new = dict(resource)
    new_meta = {k: v for k, v in (new.pop("meta", None) or {}).items() if k not in _SERVER_META}
    new.setdefault("id", old.get("id"))
    return bool(old == new and old_meta == new_meta)


def _status(resource: dict[str, Any] | None) -> str | None:
    status = resource.get("status") if isinstance(resource, dict) else None
    return status if isinstance(status, str) else None


_SERVER_META = ("versionId", "lastUpdated")


class Writer:
    """Writes inside one open transaction; obtained from :meth:`FhirStore.write`.

    Version rows and search-index rows are buffered and written in batches by :meth:`flush`, which
    runs before every search inside the transaction and when the unit of work ends.
    """

    def __init__(
        self, store: FhirStore, conn: Connection, policy: AccessPolicy | None = None
    ) -> None:
        self.store = store
        self._conn = conn
        self.policy = policy
        self.access = store.access(policy)
        #: True while the service acts on its own behalf (see :meth:`as_system`).
        self.internal = policy is None
        #: The store's write hook; a unit of work may replace it for its own writes.
        self.on_written: WriteHook | None = store.on_written
        self.now = to_micros(store.clock())
        self._now_text = format_instant(self.now)  # meta.lastUpdated of everything written
        self._pg = is_postgres(conn)
        self._sql = dialect_sql(self._pg)
        self._db: Any = conn.connection.driver_connection
        self._versions: list[tuple[Any, ...]] = []
        #: Resource-row statements held back until the next flush or read, sent with
        #: ``executemany`` (PostgreSQL: each would be a round trip; SQLite: one driver call for
        #: many rows): inserts on both databases, updates on PostgreSQL. Rids are known before the
        #: insert runs (:meth:`_next_rid`).
        self._deferred: list[tuple[str, tuple[Any, ...]]] = []
        self._last_rid = 0
        self._free_rid = 0  # SQLite: the next row id to use (0: not read yet)
        self._index: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in KINDS}
        #: Per kind, resources whose stored index rows go at the next flush, before the buffered
        #: rows are written; ``_unindexed_rids`` are all of them.
        self._unindexed: dict[str, list[tuple[int]]] = {kind: [] for kind in KINDS}
        self._unindexed_rids: set[int] = set()
        self._indexed: set[int] = set()  # rids with rows in ``_index``

    @property
    def conn(self) -> Connection:
        """The transaction's connection, with everything written so far flushed to it."""
        self.flush()
        return self._conn

    @contextmanager
    def as_system(self) -> Iterator[Writer]:
        """Write as the service itself (no scope limits; the tenant still applies): for the
        consequences of a write the caller was allowed to make, e.g. closing its CarePlan."""
        access, internal = self.access, self.internal
        self.access, self.internal = None, True
        try:
            yield self
        finally:
            self.access, self.internal = access, internal

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        self._run_deferred()
        cur = self._db.execute(sql, params)
        try:
            return cur.fetchone()
        finally:
            cur.close()

    def flush(self) -> None:
        """Write held-back resource rows, then drop the replaced index rows and write buffered
        version and index rows (PostgreSQL: all of them in one pipeline, one round trip)."""
        if not (self._deferred or self._versions or self._indexed or self._unindexed_rids):
            return
        if not self._pg:
            self._flush_rows()
            return
        bulk = self._take_bulk_rows()
        with _created_concurrently(), self._db.pipeline():
            self._flush_rows()
        if bulk:
            with _created_concurrently():
                self._copy_rows(bulk)

    def _take_bulk_rows(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """PostgreSQL: unless only a few version and index rows are buffered, take them out to be
        sent with ``COPY`` after the pipeline. The driver binds each ``executemany`` row on its
        own (~10 µs a row), ``COPY`` streams them: storing an AuditEvent's twelve rows cost 130
        µs of the writer's CPU and costs 40 µs; an API create of a Patient (some thirty rows
        with its AuditEvent) went from ~850 to ~1,150 a second on one core, although each
        table's ``COPY`` is a round trip of its own. A handful of rows stay in the pipeline."""
        count = len(self._versions) + sum(len(rows) for rows in self._index.values())
        if count < _COPY_ROWS:
            return []
        bulk: list[tuple[str, list[tuple[Any, ...]]]] = []
        if self._versions:
            bulk.append((_COPY_VERSIONS, self._versions))
            self._versions = []
        for kind, rows in self._index.items():
            if rows:
                bulk.append((_COPY_INDEX[kind], rows))
                self._index[kind] = []
        return bulk

    def _copy_rows(self, bulk: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        cur = self._db.cursor()
        try:
            for statement, rows in bulk:
                with cur.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
        finally:
            cur.close()

    def _flush_rows(self) -> None:
        self._run_deferred()
        if self._unindexed_rids:
            for kind, rids in self._unindexed.items():
                if rids:
                    cur = self._db.cursor()
                    cur.executemany(self._sql.index_delete[kind], rids)
                    cur.close()
                    self._unindexed[kind] = []
            self._unindexed_rids.clear()
        if self._versions:
            cur = self._db.cursor()
            cur.executemany(self._sql.insert_version, self._versions)
            cur.close()
            self._versions = []
        for kind, rows in self._index.items():
            if rows:
                cur = self._db.cursor()
                cur.executemany(self._sql.index_insert[kind], rows)
                cur.close()
                self._index[kind] = []
        self._indexed.clear()

    # -- conditional lookups ------------------------------------------------------------------

    def lock(self, key: str) -> None:
        """Serialise writers that use the same key until this transaction ends (PostgreSQL)."""
        if self._pg:
            self._one(self._sql.advisory_lock, (_lock_digest(key),))

    def lock_many(self, keys: Sequence[str]) -> None:
        """:meth:`lock` for several keys, taken in the given order, in one round trip (callers
        give every writer the same order, e.g. sorted, so that none waits in a cycle)."""
        if self._pg and keys:
            self._run_deferred()
            cur = self._db.execute(self._sql.advisory_locks, ([_lock_digest(k) for k in keys],))
            cur.fetchall()
            cur.close()

    def lock_rows(self, keys: Iterable[tuple[str, str]]) -> None:
        """Lock the current rows of these resources in sorted order (PostgreSQL; SQLite writers
        are already serialised)."""
        if self._pg:
            for key in sorted(keys):
                self._one(self._sql.lock_current, key)

    def find(self, res_type: str, params: Sequence[tuple[str, str]], limit: int = 2) -> list[str]:
        """Ids of resources matching a conditional query (at most ``limit``)."""
        query = self.store.parse(res_type, params, access=self.access)
        if not query.conditions:
            raise InvalidRequest("A conditional interaction needs at least one search parameter")
        self.flush()
        return [res_id for _, res_id in find_ids(self.conn, query, limit)]

    def previous_version(self, stored: StoredResource) -> dict[str, Any] | None:
        """The JSON of the version before ``stored`` (None: first version, or a deletion)."""
        if stored.version_id <= 1:
            return None
        self.flush()  # the version before may have been written earlier in this transaction
        v, r = resource_versions, resources
        content = self.conn.execute(
            select(v.c.content)
            .select_from(v.join(r, r.c.rid == v.c.rid))
            .where(
                r.c.res_type == stored.res_type,
                r.c.res_id == stored.res_id,
                v.c.version_id == stored.version_id - 1,
            )
        ).scalar_one_or_none()
        if content is None:
            return None
        data = orjson.loads(content)
        return data if isinstance(data, dict) else None

    def count(self, res_type: str, params: Sequence[tuple[str, str]]) -> int:
        """How many resources match a search (within the writer's access), counted in SQL."""
        query = self.store.parse(res_type, params, access=self.access)
        self.flush()
        return count_matches(self.conn, query)

    def count_by_reference(
        self, res_type: str, params: Sequence[tuple[str, str]], param: str, targets: Iterable[str]
    ) -> dict[str, int]:
        """For each target reference (``Type/id``), how many resources matching the search refer
        to it through ``param`` — one grouped query (e.g. open Tasks per owner)."""
        wanted = {t for t in targets if t.count("/") == 1}
        counts = dict.fromkeys(wanted, 0)
        if not wanted:
            return counts
        query = self.store.parse(res_type, params, access=self.access)
        self.flush()
        r, i = resources.alias("r"), idx_reference.alias("i")
        ids = {t.partition("/")[2] for t in wanted}
        stmt = (
            select(i.c.target_type, i.c.target_id, func.count(func.distinct(r.c.rid)))
            .select_from(r.join(i, i.c.rid == r.c.rid))
            .where(
                query.where(r),
                i.c.res_type == res_type,
                i.c.param == param,
                i.c.target_id.in_(sorted(ids)),
            )
            .group_by(i.c.target_type, i.c.target_id)
        )
        for row in self.conn.execute(stmt):
            key = f"{row[0]}/{row[1]}"
            if key in counts:
                counts[key] = int(row[2])
        return counts

    def _locked_find(self, res_type: str, params: Sequence[tuple[str, str]]) -> list[str]:
        self.lock(conditional_lock_key(res_type, params))
        return self.find(res_type, params)

    # -- interactions --------------------------------------------------------------------------

    def create(
        self,
        res_type: str,
        resource: dict[str, Any],
        *,
        if_none_exist: Sequence[tuple[str, str]] | None = None,
        res_id: str | None = None,
        known_new: bool = False,
    ) -> WriteResult:
        """Create with a new id (or ``res_id``); with ``if_none_exist`` return the one match.

        ``known_new``: the caller knows ``res_id`` names no resource, live or deleted (it made
        the id up just now, or checked in this transaction, e.g. with :meth:`taken`), so the
        existence query is skipped. Should it exist after all, the insert's unique key fails and
        the unit of work is run again (``RetryableConflict``), as for a concurrent create.
        """
        self._allowed(res_type, "c")
        if if_none_exist:
            found = self._locked_find(res_type, if_none_exist)
            if len(found) > 1:
                raise PreconditionFailed(
                    f"Conditional create matched {len(found)} {res_type} resources"
                )
            if found:
                return WriteResult(self.read(res_type, found[0]))
        if res_id is not None and not known_new and self._exists(res_type, res_id):
            raise Conflict(f"{res_type}/{res_id} already exists")
        stored = self._insert(res_type, res_id or new_id(), self._stamp(resource), "POST")
        self._check_written(res_type, "c")
        self._notify(res_type, stored, None)
        return WriteResult(stored, created=True)

    def update(
        self,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        known_new: bool = False,
    ) -> WriteResult:
        """Update (or create with this id); ``if_match`` demands the current version.

        ``known_new``: the caller knows the resource does not exist, live or deleted (see
        :meth:`create`): it is created with this id without reading the current row.
        """
        row = None if known_new else self._one(self._sql.lock_current, (res_type, res_id))
        if row is None:
            self._allowed(res_type, "c")
            if if_match is not None:
                raise PreconditionFailed(
                    f'{res_type}/{res_id} does not exist; If-Match W/"{if_match}" cannot hold'
                )
            created = self._insert(res_type, res_id, self._stamp(resource), "PUT")
            self._check_written(res_type, "c")
            self._notify(res_type, created, None)
            return WriteResult(created, created=True)
        rid, version, deleted, last_updated, stored = row
        if res_type == "AuditEvent" and not deleted:
            raise MethodNotAllowed("AuditEvents cannot be changed")
        self._check_existing(res_type, res_id, rid, "u", deleted)
        resource = self._stamp(resource)
        stored = self._sql.content_value(stored)
        if if_match is not None and if_match != version:
            raise PreconditionFailed(
                f"Version conflict on {res_type}/{res_id}: current version is {version}, "
                f"If-Match asked for {if_match}"
            )
        old = orjson.loads(stored) if stored is not None and not deleted else None
        if old is not None and _same_content(old, resource):
            current = StoredResource(res_type, res_id, version, last_updated, stored)
            return WriteResult(current, unchanged=True)
        version += 1
        content = _with_meta(res_type, res_id, resource, version, self._now_text)
        self._one_write(
            self._sql.update_resource,
            (version, self.now, False, self._sql.content_param(content), rid),
        )
        self._version_row(rid, res_type, res_id, version, "PUT", content)
        self._reindex(rid, res_type, content)
        self._check_written(res_type, "u", rid)
        written = StoredResource(res_type, res_id, version, self.now, content)
        self._notify(res_type, written, _status(old))
        return WriteResult(written, created=bool(deleted))

    def conditional_update(
        self,
        res_type: str,
        params: Sequence[tuple[str, str]],
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """PUT Type?query: update the one match, create when none, 412 when several."""
        found = self._locked_find(res_type, params)
        if len(found) > 1:
            raise PreconditionFailed(
                f"Conditional update matched {len(found)} {res_type} resources"
            )
        body_id = resource.get("id")
        if found:
            if body_id and body_id != found[0]:
                raise InvalidRequest(
                    f"Resource id {body_id!r} differs from the matched resource {found[0]!r}"
                )
            return self.update(res_type, found[0], resource, if_match=if_match)
        return self.create(res_type, resource, res_id=body_id or None)

    def delete(self, res_type: str, res_id: str) -> WriteResult:
        """Logical delete: a new version marked deleted; reads then answer 410."""
        row = self._one(self._sql.lock_current, (res_type, res_id))
        if row is None:
            self._allowed(res_type, "d")
            raise NotFound(f"{res_type}/{res_id} not found")
        rid, version, deleted, last_updated, _ = row
        if res_type == "AuditEvent":
            raise MethodNotAllowed("AuditEvents cannot be deleted")
        self._check_existing(res_type, res_id, rid, "d", deleted)
        if deleted:
            return WriteResult(
                StoredResource(res_type, res_id, version, last_updated, None), unchanged=True
            )
        version += 1
        self._one_write(self._sql.update_resource, (version, self.now, True, None, rid))
        self._version_row(rid, res_type, res_id, version, "DELETE", None)
        self._clear_index(rid)
        return WriteResult(StoredResource(res_type, res_id, version, self.now, None))

    def audit(
        self, event: dict[str, Any], index: IndexRows | None = None, *, res_id: str | None = None
    ) -> StoredResource:
        """Append an AuditEvent (the service's own record: no access check applies).

        ``index``: its search-index rows when the caller has them already (saves extraction).
        ``res_id``: its id when the caller assigns one (new, like :func:`new_id`'s; a duplicate
        fails the insert and the unit of work is run again), else a new one.
        """
        return self._insert(
            "AuditEvent", res_id or new_id(), event, "POST", index, shared_content=True
        )

    def taken(self, res_type: str, res_ids: Iterable[str]) -> set[str]:
        """Those of ``res_ids`` that name a resource of ``res_type``, live or deleted (an id once
        used stays taken: a create with it is a conflict, an update revives it)."""
        wanted = sorted(set(res_ids))
        found: set[str] = set()
        if not wanted:
            return found
        self.flush()
        r = resources
        for start in range(0, len(wanted), _ID_BATCH):
            part = wanted[start : start + _ID_BATCH]
            found.update(
                self._conn.execute(
                    select(r.c.res_id).where(r.c.res_type == res_type, r.c.res_id.in_(part))
                ).scalars()
            )
        return found

    def read(self, res_type: str, res_id: str) -> StoredResource:
        row = self._one(self._sql.read, (res_type, res_id))
        if self.access is not None:
            self.flush()
            self.store.check_readable(self.conn, self.access, res_type, res_id, row)
        return _read_row(self._sql, res_type, res_id, row)

    def types_with_id(self, res_id: str) -> list[str]:
        """Types that have a live resource with this id (to resolve a bare ``urn:uuid``)."""
        self._run_deferred()
        cur = self._db.execute(self._sql.types_with_id, (res_id, False))
        try:
            return [row[0] for row in cur.fetchall()]
        finally:
            cur.close()

    # -- access ----------------------------------------------------------------------------------

    def _allowed(self, res_type: str, permission: str) -> RowFilter | None:
        if self.access is None:
            return None
        allowed = self.access(res_type, permission)
        if allowed is False:
            raise Forbidden(f"No scope allows {_VERBS[permission]} {res_type}")
        return allowed if callable(allowed) else None

    def _row_visible(self, rid: int, guard: RowFilter) -> bool:
        self.flush()
        r = resources.alias("acl")
        return (
            self.conn.execute(select(r.c.rid).where(r.c.rid == rid, guard(r))).first() is not None
        )

    def _check_existing(
        self, res_type: str, res_id: str, rid: int, permission: str, deleted: bool
    ) -> None:
        """The caller may change this stored resource (before the change)."""
        guard = self._allowed(res_type, permission)
        if guard is not None and (deleted or not self._row_visible(rid, guard)):
            raise Forbidden(f"Not allowed to {_VERBS[permission]} {res_type}/{res_id}")

    def _check_written(self, res_type: str, permission: str, rid: int | None = None) -> None:
        """The written resource is still within the caller's reach (after the change)."""
        guard = self._allowed(res_type, permission)
        if guard is None:
            return
        if rid is None:
            rid = self._last_rid
        if not self._row_visible(rid, guard):
            raise Forbidden(
                f"The {res_type} would be outside what this token or session may "
                f"{_VERBS[permission]} (e.g. another patient's record)"
            )

    def _stamp(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Tag the resource with the caller's tenant (refusing another tenant's tag)."""
        tenant = self.policy.tenant if self.policy is not None else None
        if tenant is None:
            return resource
        meta = dict(resource.get("meta") or {})
        tags = [t for t in meta.get("tag") or [] if isinstance(t, dict)]
        for tag in tags:
            if tag.get("system") == TENANT_SYSTEM and tag.get("code") != tenant:
                raise Forbidden("The resource belongs to another tenant")
        if not any(t.get("system") == TENANT_SYSTEM for t in tags):
            tags.append({"system": TENANT_SYSTEM, "code": tenant})
        meta["tag"] = tags
        return {**resource, "meta": meta}

    # -- internals -------------------------------------------------------------------------------

    def _notify(self, res_type: str, stored: StoredResource, status: str | None) -> None:
        """Run the write hook, if any, with the previous version's status."""
        if self.on_written is not None:
            self.on_written(self, res_type, stored, status)

    def _one_write(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._pg:
            self._deferred.append((sql, params))
            return
        self._db.execute(sql, params).close()

    def _run_deferred(self) -> None:
        """Run the held-back statements, one ``executemany`` per statement."""
        if not self._deferred:
            return
        pending, self._deferred = self._deferred, []
        # One batch per statement, in order of first use: statements of different kinds touch
        # different rows or tables here (a read in between flushes first), and each kind keeps
        # its own order.
        batches: dict[str, list[tuple[Any, ...]]] = {}
        for sql, params in pending:
            batches.setdefault(sql, []).append(params)
        with _created_concurrently():
            for sql, rows in batches.items():
                cur = self._db.cursor()
                cur.executemany(sql, rows)
                cur.close()

    def _next_rid(self) -> int:
        """The row id of a new resource row, known before its (held-back) insert runs.

        PostgreSQL: from the store's block of sequence values (one round trip per 64 rows, for
        all writers; values a crash leaves unused are gaps, as sequences allow). SQLite: one past
        the highest row id, as SQLite itself would choose; the writer holds the database's only
        write lock, so it reads the highest id once and counts on from there.
        """
        if self._pg:
            return self.store._take_rid(self._db)
        if not self._free_rid:
            self._free_rid = int(self._one(_MAX_RID, ())[0] or 0) + 1
        rid = self._free_rid
        self._free_rid += 1
        return rid

    def _exists(self, res_type: str, res_id: str) -> bool:
        return self._one(self._sql.exists, (res_type, res_id)) is not None

    def _insert(
        self,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        method: str,
        index: IndexRows | None = None,
        *,
        shared_content: bool = False,
    ) -> StoredResource:
        """Insert version 1. ``shared_content``: the version row keeps no copy of the content
        (vread and history take the resource row's): for resources that never get a second
        version (AuditEvents), whose content would otherwise be stored twice."""
        content = _with_meta(res_type, res_id, resource, 1, self._now_text)
        rid = self._next_rid()
        # Held back on both databases: the next read or flush runs the inserts together.
        self._deferred.append(
            (
                self._sql.insert_resource_with_rid,
                (rid, res_type, res_id, self.now, False, self._sql.content_param(content)),
            )
        )
        self._last_rid = rid
        self._version_row(rid, res_type, res_id, 1, method, None if shared_content else content)
        self._index_rows(rid, res_type, content, index)
        return StoredResource(res_type, res_id, 1, self.now, content)

    def _version_row(
        self, rid: int, res_type: str, res_id: str, version: int, method: str, content: bytes | None
    ) -> None:
        self._versions.append(
            (rid, version, res_type, res_id, self.now, method, self._sql.content_param(content))
        )

    def _clear_index(self, rid: int, kinds: Iterable[str] = KINDS) -> None:
        """Drop the resource's index rows of these kinds (buffered ones now, stored ones at the
        next flush)."""
        if rid in self._indexed:  # rows of this resource still buffered: drop them
            self._indexed.discard(rid)
            for kind, rows in self._index.items():
                if rows:
                    self._index[kind] = [r for r in rows if r[0] != rid]
        for kind in kinds:
            self._unindexed[kind].append((rid,))
        self._unindexed_rids.add(rid)

    def _reindex(self, rid: int, res_type: str, content: bytes) -> None:
        """Replace the index rows of a stored resource with those of its new ``content``.

        SQLite: the stored rows are read first (one local query) and only the kinds whose rows
        change are deleted and written again; an update that leaves, say, a Patient's birth date
        and address as they were rewrites none of their rows (nor the index pages they sit on,
        which a commit would write out). Only when nothing of the resource's index is still
        buffered or waiting to be deleted: then the stored rows are the whole truth. PostgreSQL
        (where the read would be a round trip): every kind is replaced.
        """
        rows = extract_index(res_type, orjson.loads(content), self.store.registry)
        if self._pg or rid in self._indexed or rid in self._unindexed_rids:
            self._clear_index(rid)
            self._index_rows(rid, res_type, content, rows)
            return
        stored: IndexRows = {kind: [] for kind in KINDS}
        cur = self._db.execute(_STORED_INDEX_ROWS, (rid,) * len(KINDS))
        for row in cur.fetchall():
            kind = KINDS[row[0]]
            stored[kind].append(row[1 : 2 + _INDEX_WIDTH[kind]])
        cur.close()
        changed = [kind for kind in KINDS if rows[kind] != stored[kind]]
        if not changed:
            return
        self._clear_index(rid, [kind for kind in changed if stored[kind]])
        self._index_rows(rid, res_type, content, {kind: rows[kind] for kind in changed})

    def _index_rows(
        self, rid: int, res_type: str, content: bytes, index: IndexRows | None = None
    ) -> None:
        rows = (
            index
            if index is not None
            else extract_index(res_type, orjson.loads(content), self.store.registry)
        )
        for kind, kind_rows in rows.items():
            if kind_rows:
                self._index[kind] += [(rid, res_type, *row) for row in kind_rows]
        self._indexed.add(rid)


_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


_RID_BLOCK = 64
#: Value columns of each kind's index table, in the order :func:`extract_index` gives them.
_INDEX_COLUMNS = {
    "token": ("system", "code"),
    "string": ("value", "exact"),
    "reference": ("target_type", "target_id", "url"),
    "date": ("low", "high"),
    "number": ("value", "system", "code"),
}
_INDEX_WIDTH = {kind: len(columns) for kind, columns in _INDEX_COLUMNS.items()}
#: SQLite: a resource's stored index rows, as (kind number, param, values..., padding).
_STORED_INDEX_ROWS = " UNION ALL ".join(
    f"SELECT {n}, param, "
    + ", ".join(_INDEX_COLUMNS[kind] + ("NULL",) * (3 - _INDEX_WIDTH[kind]))
    + f" FROM idx_{kind} WHERE rid = ?"
    for n, kind in enumerate(KINDS)
)
#: PostgreSQL: buffered version and index rows from which a flush sends them with ``COPY``
#: (measured: creates of one Patient, ~30 rows, ~850/s in the pipeline, ~1,150/s with ``COPY``).
_COPY_ROWS = 16
_COPY_VERSIONS = (
    "COPY resource_versions (rid, version_id, res_type, res_id, last_updated, method, content) "
    "FROM STDIN"
)
_COPY_INDEX = {
    kind: f"COPY idx_{kind} ({', '.join(('rid', 'res_type', 'param', *columns))}) FROM STDIN"
    for kind, columns in _INDEX_COLUMNS.items()
}
#: Ids per ``IN (...)`` list of :meth:`Writer.taken`.
_ID_BATCH = 1000
_MAX_RID = "SELECT max(rid) FROM resources"


def _lock_digest(key: str) -> int:
    """A signed 64-bit advisory-lock key for ``key``."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") - (1 << 63)


def conditional_lock_key(res_type: str, params: Sequence[tuple[str, str]]) -> str:
    """The key a conditional create or update on ``params`` locks (:meth:`Writer.lock`): every
    writer that finds a resource by the same search (e.g. an identifier) serialises on it."""
    return res_type + "?" + "&".join(f"{k}={v}" for k, v in sorted(params))


@contextmanager
def _created_concurrently(what: str = "a resource") -> Iterator[None]:
    """A duplicate key means another writer created the same id first: the whole unit of work
    runs again (``RetryableConflict``)."""
    try:
        yield
    except Exception as exc:
        if _is_unique_violation(exc):
            raise RetryableConflict(f"{what} was created concurrently") from exc
        raise


def _is_unique_violation(exc: Exception) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "23505":
        return True
    return type(exc).__name__ == "IntegrityError" and "UNIQUE" in str(exc)


def _read_row(sql: Dialect, res_type: str, res_id: str, row: Any) -> StoredResource:
    if row is None:
        raise NotFound(f"{res_type}/{res_id} not found")
    version, last_updated, deleted, content = row
    if deleted:
        raise Gone(f"{res_type}/{res_id} was deleted", headers={"ETag": f'W/"{version}"'})
    return StoredResource(res_type, res_id, version, last_updated, sql.content_value(content))


class FhirStore:
    """Versioned FHIR resources with a search index, on one SQLAlchemy engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        registry: SearchRegistry | None = None,
        clock: Clock = _utc_now,
        retries: int = 8,
        default_count: int = 50,
        max_count: int = 1000,
        max_include: int = 1000,
        base_url: str | None = None,
        group_commit: bool = True,
    ) -> None:
        self.engine = engine
        self.registry = registry or default_registry()
        self.clock = clock
        self.retries = retries
        self.default_count = default_count
        self.max_count = max_count
        self.max_include = max_include
        self.base_url = base_url
        #: Hook run after every create and update of this store's Writers (see ``WriteHook``).
        self.on_written: WriteHook | None = None
        self._sql = dialect_sql(engine.dialect.name == "postgresql")
        #: A point read on SQLite (WAL) takes microseconds and never waits for a writer, so the
        #: API runs it on the event loop; on PostgreSQL it is a network round trip (threadpool).
        self.inline_reads = engine.dialect.name == "sqlite"
        #: SQLite: each thread keeps one driver connection of its own for point reads (in
        #: autocommit; a SELECT's snapshot ends with its cursor), instead of a pool checkout.
        self._point_reads: threading.local | None = (
            threading.local()
            if self.inline_reads and engine.url.database not in (None, "", ":memory:")
            else None
        )
        self._rid_block: list[int] = []  # PostgreSQL: sequence values taken, not yet used
        #: Per event loop, the slots of :meth:`blocking` (one per pooled connection).
        self._limiters: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, anyio.CapacityLimiter
        ] = weakref.WeakKeyDictionary()
        self._rid_lock = threading.Lock()
        #: Waits until the AuditEvents of recent accesses are stored (the audit journal's
        #: ``settle``); every read and search of AuditEvents calls it first.
        self.settle_audit: Callable[[], bool] | None = None
        #: SQLite: concurrent writes share transactions (group commit); None on PostgreSQL.
        self._committer = group_committer(engine) if group_commit else None

    # -- writes --------------------------------------------------------------------------------

    # -- access ----------------------------------------------------------------------------------

    def add_write_hook(self, hook: WriteHook) -> None:
        """Run ``hook`` after the current write hook, in each write's transaction."""
        previous = self.on_written
        if previous is None:
            self.on_written = hook
            return

        def both(w: Writer, res_type: str, stored: StoredResource, status: str | None) -> None:
            previous(w, res_type, stored, status)
            hook(w, res_type, stored, status)

        self.on_written = both

    def access(self, policy: AccessPolicy | None) -> Access | None:
        """The policy as row conditions per (type, permission); None when nothing is limited."""
        if policy is None or policy.unrestricted():
            return None

        def conditions(res_type: str, params: Sequence[tuple[str, str]]) -> list[RowFilter]:
            return self.parse(res_type, params).conditions

        def check(res_type: str, permission: str) -> RowFilter | bool | None:
            return policy.row_filter(res_type, permission, self.registry, conditions)

        return check

    def check_readable(
        self, conn: Connection, access: Access, res_type: str, res_id: str, row: Any
    ) -> None:
        """Raise unless the caller may read this resource; hidden ones read as 404."""
        allowed = access(res_type, "r")
        if allowed is False:
            raise Forbidden(f"No scope allows reading {res_type}")
        if not callable(allowed) or row is None:
            return
        r = resources.alias("acl")
        visible = conn.execute(
            select(r.c.rid).where(
                r.c.res_type == res_type, r.c.res_id == res_id, r.c.deleted == false(), allowed(r)
            )
        ).first()
        if visible is None:
            raise NotFound(f"{res_type}/{res_id} not found")

    def _check_read(
        self, policy: AccessPolicy | None, res_type: str, res_id: str, row: Any
    ) -> None:
        access = self.access(policy)
        if access is not None:
            with read_connection(self.engine) as conn:
                self.check_readable(conn, access, res_type, res_id, row)

    def write(self, work: Callable[[Writer], T], *, policy: AccessPolicy | None = None) -> T:
        """Run ``work`` with a Writer in one transaction, retried whole on conflicts."""
        unit = self._unit(work, policy)
        if self._committer is not None:
            return self._committer.run(unit)
        return run_write(self.engine, unit, retries=self.retries)

    async def awrite(self, work: Callable[[Writer], T], *, policy: AccessPolicy | None = None) -> T:
        """:meth:`write` from the event loop: SQLite hands the unit to the group-commit thread
        and awaits it (no threadpool thread waits in between); PostgreSQL runs it in the
        threadpool."""
        if self._committer is None:
            return await self.blocking(lambda: self.write(work, policy=policy))
        return await self._committer.run_async(self._unit(work, policy))

    async def blocking(self, call: Callable[[], T]) -> T:
        """Run a blocking store call from the event loop, in the threadpool, with at most as many
        at once as the engine's pool keeps connections: more would each open and close a
        connection of their own (the pool's overflow) and take turns for the interpreter lock;
        instead they wait on the loop for a free slot."""
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            size = getattr(self.engine.pool, "size", None)
            limiter = self._limiters[loop] = anyio.CapacityLimiter(
                max(1, size() if callable(size) else 10)
            )
        return await anyio.to_thread.run_sync(call, limiter=limiter)

    def _unit(
        self, work: Callable[[Writer], T], policy: AccessPolicy | None
    ) -> Callable[[Connection], T]:
        def unit(conn: Connection) -> T:
            writer = Writer(self, conn, policy)
            result = work(writer)
            writer.flush()
            return result

        return unit

    def create(
        self,
        res_type: str,
        resource: dict[str, Any],
        *,
        if_none_exist: Sequence[tuple[str, str]] | None = None,
        policy: AccessPolicy | None = None,
    ) -> WriteResult:
        return self.write(
            lambda w: w.create(res_type, resource, if_none_exist=if_none_exist), policy=policy
        )

    def update(
        self,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        policy: AccessPolicy | None = None,
    ) -> WriteResult:
        return self.write(
            lambda w: w.update(res_type, res_id, resource, if_match=if_match), policy=policy
        )

    def conditional_update(
        self,
        res_type: str,
        params: Sequence[tuple[str, str]],
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        policy: AccessPolicy | None = None,
    ) -> WriteResult:
        return self.write(
            lambda w: w.conditional_update(res_type, params, resource, if_match=if_match),
            policy=policy,
        )

    def delete(
        self, res_type: str, res_id: str, *, policy: AccessPolicy | None = None
    ) -> WriteResult:
        return self.write(lambda w: w.delete(res_type, res_id), policy=policy)

    # -- reads -----------------------------------------------------------------------------------

    def _take_rid(self, db: Any) -> int:
        with self._rid_lock:
            if not self._rid_block:
                cur = db.execute(self._sql.next_rids, (_RID_BLOCK,))
                self._rid_block = [row[0] for row in cur.fetchall()][::-1]
                cur.close()
            return self._rid_block.pop()

    def _settled(self, res_type: str | None) -> None:
        """Before AuditEvents are read: every access made so far is among them."""
        settle = self.settle_audit
        if res_type in (None, "AuditEvent") and settle is not None and not settle():
            raise Unavailable("The audit trail is still being written; try again shortly")

    def read(
        self, res_type: str, res_id: str, *, policy: AccessPolicy | None = None
    ) -> StoredResource:
        self._settled(res_type)
        row = self._fetch_one(self._sql.read, (res_type, res_id))
        self._check_read(policy, res_type, res_id, row)
        return _read_row(self._sql, res_type, res_id, row)

    async def aread(self, res_type: str, res_id: str, reader: AsyncReader) -> StoredResource:
        """``read`` on the event loop (PostgreSQL), for callers whose policy limits nothing."""
        if res_type == "AuditEvent":
            return await self.blocking(lambda: self.read(res_type, res_id))
        row = await reader.read_current(res_type, res_id)
        return _read_row(self._sql, res_type, res_id, row)

    async def avread(
        self, res_type: str, res_id: str, version: int, reader: AsyncReader
    ) -> StoredResource:
        if res_type == "AuditEvent":
            return await self.blocking(lambda: self.vread(res_type, res_id, version))
        row = await reader.fetch_one(self._sql.vread, (res_type, res_id, version))
        return self._vread_row(res_type, res_id, version, row)

    def _fetch_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        """One row from a driver connection, outside SQLAlchemy's statement layer."""
        local = self._point_reads
        if local is not None:
            conn: Any = getattr(local, "conn", None)
            if conn is None:
                raw = self.engine.raw_connection()
                conn = local.conn = raw.driver_connection
                raw.detach()  # this thread's own, for as long as the store lives
            cur = conn.execute(sql, params)
            try:
                return cur.fetchone()
            finally:
                cur.close()
        raw = self.engine.raw_connection()
        try:
            cur = raw.driver_connection.execute(sql, params)  # type: ignore[union-attr]
            row = cur.fetchone()
            cur.close()
            raw.rollback()
        finally:
            raw.close()
        return row

    def vread(
        self, res_type: str, res_id: str, version: int, *, policy: AccessPolicy | None = None
    ) -> StoredResource:
        self._settled(res_type)
        self._check_read(policy, res_type, res_id, True)
        row = self._fetch_one(self._sql.vread, (res_type, res_id, version))
        return self._vread_row(res_type, res_id, version, row)

    def _vread_row(self, res_type: str, res_id: str, version: int, row: Any) -> StoredResource:
        if row is None:
            raise NotFound(f"{res_type}/{res_id}/_history/{version} not found")
        last_updated, method, content = row
        if method == "DELETE":
            raise Gone(f"{res_type}/{res_id} version {version} is a deletion")
        return StoredResource(
            res_type, res_id, version, last_updated, self._sql.content_value(content)
        )

    def parse(
        self,
        res_type: str,
        params: Sequence[tuple[str, str]],
        *,
        lenient: bool = False,
        policy: AccessPolicy | None = None,
        access: Access | None = None,
    ) -> SearchQuery:
        return parse_search(
            res_type,
            params,
            self.registry,
            default_count=self.default_count,
            max_count=self.max_count,
            base_url=self.base_url,
            lenient=lenient,
            access=access if access is not None else self.access(policy),
        )

    def search(self, query: SearchQuery) -> SearchPage:
        if query.res_type == "AuditEvent" or any(
            spec.source_type == "AuditEvent" for spec in query.revincludes
        ):
            self._settled("AuditEvent")
        with read_connection(self.engine) as conn:
            return run_search(conn, query, max_include=self.max_include)

    def history(
        self,
        res_type: str | None = None,
        res_id: str | None = None,
        *,
        since: str | None = None,
        count: int | None = None,
        cursor: str | None = None,
        policy: AccessPolicy | None = None,
    ) -> HistoryPage:
        """Versions newest first: of one resource, one type, or everything."""
        self._settled(res_type)
        access = self.access(policy)
        v = resource_versions
        limit = min(count if count is not None else self.default_count, self.max_count)
        stmt = select(
            v.c.res_type,
            v.c.res_id,
            v.c.version_id,
            v.c.last_updated,
            v.c.method,
            v.c.content,
            v.c.rid,
        )
        with read_connection(self.engine) as conn:
            if res_id is not None:
                assert res_type is not None
                rid = conn.execute(
                    select(resources.c.rid).where(
                        resources.c.res_type == res_type, resources.c.res_id == res_id
                    )
                ).scalar()
                if rid is None:
                    raise NotFound(f"{res_type}/{res_id} not found")
                if access is not None:
                    self.check_readable(conn, access, res_type, res_id, rid)
                stmt = stmt.where(v.c.rid == rid)
            elif res_type is not None:
                stmt = stmt.where(v.c.res_type == res_type)
                if access is not None:
                    allowed = access(res_type, "s")
                    if allowed is False:
                        raise Forbidden(f"No scope allows searching {res_type}")
                    if callable(allowed):
                        r = resources.alias("acl")
                        stmt = stmt.where(
                            v.c.rid.in_(select(r.c.rid).where(r.c.res_type == res_type, allowed(r)))
                        )
            elif access is not None:
                raise Forbidden("The history of the whole server needs unrestricted access")
            if since:
                try:
                    stmt = stmt.where(v.c.last_updated >= date_range(since)[0])
                except ValueError as exc:
                    raise InvalidRequest(f"_since must be a FHIR instant: {since!r}") from exc
            if cursor:
                last, rid_c, ver = _decode_history_cursor(cursor)
                stmt = stmt.where(
                    or_(
                        v.c.last_updated < last,
                        and_(v.c.last_updated == last, v.c.rid < rid_c),
                        and_(v.c.last_updated == last, v.c.rid == rid_c, v.c.version_id < ver),
                    )
                )
            stmt = stmt.order_by(
                v.c.last_updated.desc(), v.c.rid.desc(), v.c.version_id.desc()
            ).limit(limit + 1)
            rows = conn.execute(stmt).all()
            # Versions stored without content (not deletions) share the resource row's.
            shared = sorted({r[6] for r in rows if r[5] is None and r[4] != "DELETE"})
            current: dict[int, Any] = {}
            if shared:
                found = conn.execute(
                    select(resources.c.rid, resources.c.content).where(resources.c.rid.in_(shared))
                )
                current = {row[0]: row[1] for row in found}
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last_row = rows[-1]
            next_cursor = f"{last_row[3]}.{last_row[6]}.{last_row[2]}"
        entries = [
            HistoryEntry(
                StoredResource(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    current.get(r[6]) if r[5] is None and r[4] != "DELETE" else r[5],
                ),
                r[4],
            )
            for r in rows
        ]
        return HistoryPage(entries, next_cursor)


def _decode_history_cursor(cursor: str) -> tuple[int, int, int]:
    try:
        last, rid, ver = (int(part) for part in cursor.split("."))
    except ValueError as exc:
        raise InvalidRequest("Invalid history paging cursor") from exc
    return last, rid, ver
