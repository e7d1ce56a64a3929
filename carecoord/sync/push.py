"""Push of CareCoord's Tasks, CarePlans, CareTeams and ServiceRequests to EHRs that allow writes.

- :func:`enqueue_push` (or :class:`PushHook` as the store's write hook) queues one ``sync.push``
  job per writable connection in the writer's transaction; key = connection|type|id|version.
- The job (:class:`PushHandler`, :class:`Pusher`) pushes the *current* local version: the first
  time a conditional create on ``identifier=https://carecoord.org/fhir/sid/{type}|{local id}``,
  later a ``PUT`` with ``If-Match``. On 412 or 409 it re-reads the EHR's copy and merges top-level
  elements three ways (base: what was last pushed); a collision, a resource the EHR deleted (404,
  410) or several EHR resources with our identifier is a *conflict*: recorded in ``push_state``
  and the job dead-lettered with a reason starting ``conflict:``. Nothing is overwritten silently.
- References: to resources pulled from that EHR -> their EHR ids; to resources already pushed
  there -> their EHR ids; anything else -> a logical reference (``type`` + our identifier, the
  ``display`` kept). The subject (``Task.for``, ``*.subject``) must have come from that EHR, else
  the job is dead-lettered (``subject not at EHR``).

Resources pulled from an EHR (source tag) and deletions are not pushed (ADR 0013).

Errors (besides those of :mod:`carecoord.sync`)::

    SyncError
    ├── PushConflict              recorded in push_state; the job is dead-lettered
    └── FatalError
        └── SubjectNotAtEhr       the subject did not come from the connection
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from carecoord.db import read_connection, run_write
from carecoord.fhir.errors import Gone, NotFound
from carecoord.fhir.store import FhirStore, StoredResource, Writer
from carecoord.fhir.types import RESOURCE_TYPES
from carecoord.jobs import Fatal, JobContext, Registry, RetryLater, enqueue
from carecoord.jobs.clock import Clock, to_micros
from carecoord.settings import ConfigError, Settings, load_settings
from carecoord.smart.connections import EhrConnection
from carecoord.sync.client import EhrClient, EhrResponse
from carecoord.sync.errors import (
    FatalError,
    InvalidResponse,
    RequestRejected,
    SyncError,
    TemporaryError,
)
from carecoord.sync.identity import SOURCE_TAG_SYSTEM, source_ids
from carecoord.sync.push_tables import REASON_LENGTH, push_state
from carecoord.sync.runtime import SyncRuntime

__all__ = [
    "IDENTIFIER_BASE",
    "PUSH_KIND",
    "PUSH_TYPES",
    "PushConflict",
    "PushHandler",
    "PushHook",
    "PushState",
    "Pusher",
    "SubjectNotAtEhr",
    "enqueue_push",
    "identifier_system",
    "load_state",
    "push_key",
    "register_push_handlers",
    "three_way_merge",
    "to_ehr_form",
]

log = logging.getLogger("carecoord.sync.push")

PUSH_KIND: Final = "sync.push"
PUSH_TYPES: Final = frozenset({"Task", "CarePlan", "CareTeam", "ServiceRequest"})
IDENTIFIER_BASE: Final = "https://carecoord.org/fhir/sid/"
#: The element naming the patient of each pushed type.
SUBJECT_ELEMENT: Final = {
    "Task": "for",
    "CarePlan": "subject",
    "CareTeam": "subject",
    "ServiceRequest": "subject",
}
#: Top-level elements that are the server's, not merged.
_NOT_MERGED: Final = ("resourceType", "id", "meta")
#: Merge rounds when the EHR keeps changing the resource between our read and our PUT.
MAX_MERGE_ROUNDS: Final = 3
#: Earlier local versions compared with an EHR copy that no recorded push explains.
MAX_HISTORY: Final = 20

Resolve = Callable[[str, str], str | None]
RuntimeFactory = Callable[[Settings, Engine, Clock], SyncRuntime]
_MISSING: Final[Any] = object()


class PushConflict(SyncError):
    """The EHR's copy changed in a way that collides with ours, or is gone: a person decides."""


class SubjectNotAtEhr(FatalError):
    """The resource's subject did not come from the connection, so the EHR would not know it."""


def identifier_system(res_type: str) -> str:
    """The system of the stable identifier CareCoord gives a pushed resource of ``res_type``."""
    return IDENTIFIER_BASE + res_type


def push_key(connection: str, res_type: str, res_id: str, version: int) -> str:
    """The job key of one version of one resource for one connection."""
    return f"{connection}|{res_type}|{res_id}|{version}"


# -- enqueueing (inside the writer's transaction) ------------------------------------------------


def _from_an_ehr(resource: dict[str, Any]) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    return any(isinstance(t, dict) and t.get("system") == SOURCE_TAG_SYSTEM for t in tags)


def enqueue_push(
    w: Writer, stored: StoredResource, *, connections: Iterable[EhrConnection]
) -> list[int]:
    """Queue a push of ``stored`` to every connection that is not read-only; the new job ids.

    Runs in ``w``'s transaction. Other types, deletions and resources pulled from an EHR are
    ignored; a version already queued for a connection is not queued again.
    """
    if stored.res_type not in PUSH_TYPES or stored.content is None:
        return []
    writable = [c for c in connections if not c.read_only]
    if not writable or _from_an_ehr(orjson.loads(stored.content)):
        return []
    queued = []
    for connection in writable:
        job_id = enqueue(
            w.conn,
            kind=PUSH_KIND,
            payload={
                "connection": connection.name,
                "type": stored.res_type,
                "id": stored.res_id,
                "version": stored.version_id,
            },
            key=push_key(connection.name, stored.res_type, stored.res_id, stored.version_id),
            connection=connection.name,
        )
        if job_id is not None:
            queued.append(job_id)
    return queued


class PushHook:
    """A store write hook (``WriteHook``) that queues pushes of every pushable write."""

    def __init__(self, connections: Iterable[EhrConnection]) -> None:
        self.connections = [c for c in connections if not c.read_only]

    def __call__(
        self, w: Writer, res_type: str, stored: StoredResource, previous: str | None
    ) -> None:
        enqueue_push(w, stored, connections=self.connections)


# -- the EHR's form of a resource ----------------------------------------------------------------


def _local_target(reference: str) -> tuple[str, str] | None:
    parts = reference.split("/")
    if len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "_history"):
        return None
    if parts[0] not in RESOURCE_TYPES or not parts[1]:
        return None
    return parts[0], parts[1]


def _map_references(node: Any, resolve: Resolve) -> None:
    if isinstance(node, list):
        for item in node:
            _map_references(item, resolve)
        return
    if not isinstance(node, dict):
        return
    reference = node.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):
        target = _local_target(reference)
        if target is not None:
            res_type, local = target
            ehr_id = resolve(res_type, local)
            if ehr_id is not None:
                node["reference"] = f"{res_type}/{ehr_id}"
            else:
                del node["reference"]
                node.setdefault("type", res_type)
                node.setdefault(
                    "identifier", {"system": identifier_system(res_type), "value": local}
                )
    for key, value in node.items():
        if key != "reference" and isinstance(value, dict | list):
            _map_references(value, resolve)


def to_ehr_form(
    resource: dict[str, Any], *, resolve: Resolve, ehr_id: str | None = None
) -> dict[str, Any]:
    """The body to send for a local resource: no server meta (profiles kept), the EHR's id (or
    none), references in the EHR's ids or logical, our stable identifier added.

    :class:`SubjectNotAtEhr` when the subject is a local reference ``resolve`` cannot map.
    """
    res_type = resource["resourceType"]
    local = resource["id"]
    body: dict[str, Any] = orjson.loads(orjson.dumps(resource))
    subject = body.get(SUBJECT_ELEMENT.get(res_type, ""))
    if isinstance(subject, dict) and isinstance(subject.get("reference"), str):
        target = _local_target(subject["reference"])
        if target is not None and resolve(*target) is None:
            raise SubjectNotAtEhr(f"the {res_type}'s subject did not come from this EHR")
    _map_references(body, resolve)
    out: dict[str, Any] = {"resourceType": res_type}
    if ehr_id is not None:
        out["id"] = ehr_id
    profiles = (resource.get("meta") or {}).get("profile")
    if profiles:
        out["meta"] = {"profile": profiles}
    for key, value in body.items():
        if key not in _NOT_MERGED:
            out[key] = value
    ours = {"system": identifier_system(res_type), "value": local}
    identifiers = [i for i in out.get("identifier") or [] if isinstance(i, dict)]
    if not any(i.get("system") == ours["system"] and i.get("value") == local for i in identifiers):
        out["identifier"] = [*identifiers, ours]
    return out


def _elements(resource: dict[str, Any] | None) -> dict[str, Any]:
    if resource is None:
        return {}
    return {k: v for k, v in resource.items() if k not in _NOT_MERGED}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _elements(a) == _elements(b)


def three_way_merge(
    base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Merge top-level elements: changed only by the EHR -> theirs, only by us -> ours, by both
    the same way -> that; by both differently -> a collision. (merged, colliding element names).

    The merged resource has ``theirs``' type and id, and our ``meta`` (profiles).
    """
    b, o, t = _elements(base), _elements(ours), _elements(theirs)
    merged: dict[str, Any] = {"resourceType": theirs.get("resourceType", ours["resourceType"])}
    if "id" in theirs:
        merged["id"] = theirs["id"]
    if "meta" in ours:
        merged["meta"] = ours["meta"]
    collisions: list[str] = []
    for key in [*o, *(k for k in t if k not in o), *(k for k in b if k not in o and k not in t)]:
        bv, ov, tv = b.get(key, _MISSING), o.get(key, _MISSING), t.get(key, _MISSING)
        if tv == bv or ov == tv:
            value = ov
        elif ov == bv:
            value = tv
        else:
            collisions.append(key)
            continue
        if value is not _MISSING:
            merged[key] = value
    return merged, sorted(collisions)


# -- push state ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushState:
    """One row of ``push_state``."""

    connection: str
    res_type: str
    local_id: str
    ehr_id: str | None
    ehr_version: str | None
    pushed_version: int | None
    pushed_content: dict[str, Any] | None
    conflict: bool
    conflict_reason: str | None


def load_state(conn: Connection, connection: str, res_type: str, local: str) -> PushState | None:
    """What was pushed of ``res_type/local`` to ``connection`` (None: never tried)."""
    t = push_state
    row = conn.execute(
        select(t).where(
            t.c.connection == connection, t.c.res_type == res_type, t.c.local_id == local
        )
    ).first()
    if row is None:
        return None
    return PushState(
        connection=row.connection,
        res_type=row.res_type,
        local_id=row.local_id,
        ehr_id=row.ehr_id,
        ehr_version=row.ehr_version,
        pushed_version=row.pushed_version,
        pushed_content=orjson.loads(row.pushed_content) if row.pushed_content else None,
        conflict=bool(row.conflict),
        conflict_reason=row.conflict_reason,
    )


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _save_pushed(
    conn: Connection,
    key: tuple[str, str, str],
    *,
    ehr_id: str,
    ehr_version: str | None,
    version: int,
    content: dict[str, Any],
    now: int,
) -> None:
    """Record a successful push; a row already at a later local version is left alone."""
    t = push_state
    connection, res_type, local = key
    values = {
        "ehr_id": ehr_id,
        "ehr_version": ehr_version,
        "pushed_version": version,
        "pushed_content": orjson.dumps(content).decode(),
        "conflict": False,
        "conflict_reason": None,
        "conflict_version": None,
        "conflict_at": None,
        "updated_at": now,
    }
    stmt = _insert(conn)(t).values(
        connection=connection, res_type=res_type, local_id=local, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.connection, t.c.res_type, t.c.local_id],
        set_=values,
        where=t.c.pushed_version.is_(None) | (t.c.pushed_version < version),
    )
    conn.execute(stmt)


def _save_conflict(
    conn: Connection,
    key: tuple[str, str, str],
    *,
    reason: str,
    version: int,
    ehr_id: str | None,
    now: int,
) -> None:
    t = push_state
    connection, res_type, local = key
    values: dict[str, Any] = {
        "conflict": True,
        "conflict_reason": reason[:REASON_LENGTH],
        "conflict_version": version,
        "conflict_at": now,
        "updated_at": now,
    }
    stmt = _insert(conn)(t).values(
        connection=connection, res_type=res_type, local_id=local, ehr_id=ehr_id, **values
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.connection, t.c.res_type, t.c.local_id], set_=values
        )
    )


def _resolver(conn: Connection, connection: str) -> Resolve:
    """(type, local id) -> the EHR's id: pulled from it, else pushed to it, else None."""
    cache: dict[tuple[str, str], str | None] = {}

    def resolve(res_type: str, local: str) -> str | None:
        if (res_type, local) not in cache:
            found = source_ids(conn, connection, res_type, [local]).get(local)
            if found is None:
                t = push_state
                found = conn.execute(
                    select(t.c.ehr_id).where(
                        t.c.connection == connection,
                        t.c.res_type == res_type,
                        t.c.local_id == local,
                    )
                ).scalar_one_or_none()
            cache[(res_type, local)] = found
        return cache[(res_type, local)]

    return resolve


# -- the push ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    stored: StoredResource
    ours: dict[str, Any]  # the EHR form, no id
    state: PushState | None


def _version_of(etag: str | None) -> str | None:
    if not etag:
        return None
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    return value or None


def _from_location(location: str | None, res_type: str) -> tuple[str | None, str | None]:
    if not location:
        return None, None
    parts = location.split("?")[0].rstrip("/").split("/")
    for i in range(len(parts) - 1):
        if parts[i] == res_type:
            ehr_id = parts[i + 1]
            version = parts[i + 3] if len(parts) > i + 3 and parts[i + 2] == "_history" else None
            return ehr_id, version
    return None, None


class Pusher:
    """Pushes local resources to one connection (one :class:`EhrClient`)."""

    def __init__(self, *, store: FhirStore, client: EhrClient, clock: Clock) -> None:
        self.store = store
        self.engine = store.engine
        self.client = client
        self.connection = client.name
        self.clock = clock

    def _now(self) -> int:
        return to_micros(self.clock())

    # -- database --------------------------------------------------------------------------------

    def _plan(self, res_type: str, local: str) -> _Plan | None:
        try:
            stored = self.store.read(res_type, local)
        except (NotFound, Gone):
            return None  # deletions are not pushed
        if stored.content is None:
            return None
        with read_connection(self.engine) as conn:
            state = load_state(conn, self.connection, res_type, local)
            if state is not None and state.conflict:
                raise PushConflict(
                    f"conflict: {res_type} push to EHR '{self.connection}' held until the "
                    f"recorded conflict is resolved"
                )
            if state is not None and (state.pushed_version or 0) >= stored.version_id:
                return None
            resource = orjson.loads(stored.content)
            ours = to_ehr_form(resource, resolve=_resolver(conn, self.connection))
        return _Plan(stored, ours, state)

    def _key(self, plan: _Plan) -> tuple[str, str, str]:
        return self.connection, plan.stored.res_type, plan.stored.res_id

    def _record(
        self, plan: _Plan, ehr_id: str, ehr_version: str | None, content: dict[str, Any]
    ) -> None:
        now = self._now()
        run_write(
            self.engine,
            lambda conn: _save_pushed(
                conn,
                self._key(plan),
                ehr_id=ehr_id,
                ehr_version=ehr_version,
                version=plan.stored.version_id,
                content=content,
                now=now,
            ),
        )

    def _conflict(self, plan: _Plan, reason: str, ehr_id: str | None) -> PushConflict:
        now = self._now()
        run_write(
            self.engine,
            lambda conn: _save_conflict(
                conn,
                self._key(plan),
                reason=reason,
                version=plan.stored.version_id,
                ehr_id=ehr_id,
                now=now,
            ),
        )
        log.warning("push to EHR %s: %s conflict recorded", self.connection, plan.stored.res_type)
        return PushConflict(reason)

    def _state_moved(self, plan: _Plan) -> bool:
        with read_connection(self.engine) as conn:
            now = load_state(conn, self.connection, plan.stored.res_type, plan.stored.res_id)
        before = plan.state
        return (now.pushed_version if now else None) != (before.pushed_version if before else None)

    def _earlier_form(self, plan: _Plan, theirs: dict[str, Any]) -> bool:
        """Whether ``theirs`` is one of our own earlier versions (a push not recorded)."""
        res_type, local = plan.stored.res_type, plan.stored.res_id
        oldest = max(1, plan.stored.version_id - MAX_HISTORY)
        with read_connection(self.engine) as conn:
            resolve = _resolver(conn, self.connection)
            for version in range(plan.stored.version_id - 1, oldest - 1, -1):
                try:
                    old = self.store.vread(res_type, local, version)
                except (NotFound, Gone):
                    continue
                if old.content is None:
                    continue
                try:
                    form = to_ehr_form(orjson.loads(old.content), resolve=resolve)
                except SubjectNotAtEhr:
                    continue
                if _same(form, theirs):
                    return True
        return False

    # -- HTTP ------------------------------------------------------------------------------------

    def _what(self, method: str, res_type: str, kind: str) -> str:
        return f"{method} {res_type} {kind}"

    def _rejected(self, response: EhrResponse, what: str) -> RequestRejected:
        return RequestRejected(
            f"EHR '{self.connection}' answered {response.status} to {what}",
            status=response.status,
        )

    def _resource(self, response: EhrResponse, res_type: str) -> dict[str, Any] | None:
        if not response.content:
            return None
        try:
            body = response.json()
        except InvalidResponse:
            return None
        return body if isinstance(body, dict) and body.get("resourceType") == res_type else None

    def _written(self, response: EhrResponse, res_type: str) -> tuple[str, str | None]:
        """The EHR id and version of a resource the EHR just wrote or found."""
        body = self._resource(response, res_type)
        loc_id, loc_version = _from_location(
            response.headers.get("location") or response.headers.get("content-location"),
            res_type,
        )
        ehr_id = body.get("id") if body is not None else None
        if not isinstance(ehr_id, str) or not ehr_id:
            ehr_id = loc_id
        if not ehr_id or len(ehr_id) > 64:
            raise InvalidResponse(
                f"EHR '{self.connection}' did not say the id of the {res_type} it wrote"
            )
        version = _version_of(response.headers.get("etag"))
        if version is None and body is not None:
            meta_version = (body.get("meta") or {}).get("versionId")
            version = meta_version if isinstance(meta_version, str) else None
        return ehr_id, version or loc_version

    async def _read_ehr(self, plan: _Plan, ehr_id: str) -> tuple[dict[str, Any], str | None]:
        res_type = plan.stored.res_type
        what = self._what("GET", res_type, "read")
        response = await self.client.send("GET", self.client.url(res_type, ehr_id), what=what)
        if response.status in (404, 410):
            raise self._conflict(plan, f"conflict: the {res_type} was deleted in the EHR", ehr_id)
        if response.status != 200:
            raise self._rejected(response, what)
        body = self._resource(response, res_type)
        if body is None:
            raise InvalidResponse(
                f"EHR '{self.connection}' did not answer {what} with a {res_type}"
            )
        _, version = self._written(response, res_type)
        return body, version

    async def _put(
        self, plan: _Plan, ehr_id: str, body: dict[str, Any], version: str | None
    ) -> EhrResponse:
        res_type = plan.stored.res_type
        headers = {"If-Match": f'W/"{version}"'} if version is not None else {}
        return await self.client.send(
            "PUT",
            self.client.url(res_type, ehr_id),
            json={**body, "id": ehr_id},
            headers=headers,
            what=self._what("PUT", res_type, "update"),
        )

    # -- the steps -------------------------------------------------------------------------------

    async def push(self, res_type: str, local: str) -> str:
        """Push the current version of ``res_type/local``; what happened: ``created``,
        ``updated``, ``merged``, ``unchanged`` or ``skipped`` (nothing newer to push).

        Raises :class:`PushConflict` (recorded), :class:`TemporaryError`, :class:`FatalError`.
        """
        for _ in range(MAX_MERGE_ROUNDS):
            plan = self._plan(res_type, local)
            if plan is None:
                return "skipped"
            outcome: str | None
            if plan.state is None or plan.state.ehr_id is None:
                outcome = await self._create(plan)
            else:
                outcome = await self._update(plan, plan.state.ehr_id)
            if outcome is not None:
                return outcome
        raise TemporaryError(f"{res_type} push to EHR '{self.connection}' kept racing; later")

    async def _create(self, plan: _Plan) -> str:
        res_type, local = plan.stored.res_type, plan.stored.res_id
        what = self._what("POST", res_type, "conditional create")
        response = await self.client.send(
            "POST",
            self.client.url(res_type),
            json=plan.ours,
            headers={"If-None-Exist": f"identifier={identifier_system(res_type)}|{local}"},
            what=what,
        )
        if response.status == 201:
            ehr_id, version = self._written(response, res_type)
            self._record(plan, ehr_id, version, plan.ours)
            return "created"
        if response.status == 200:
            # Ours already (an earlier attempt whose result was not recorded).
            ehr_id, _ = self._written(response, res_type)
            theirs, version = await self._read_ehr(plan, ehr_id)
            if _same(theirs, plan.ours):
                self._record(plan, ehr_id, version, plan.ours)
                return "unchanged"
            if not self._earlier_form(plan, theirs):
                raise self._conflict(
                    plan,
                    f"conflict: the EHR already holds this {res_type} with other content",
                    ehr_id,
                )
            return await self._merge(plan, ehr_id, theirs, version, base=theirs)
        if response.status in (409, 412):
            raise self._conflict(
                plan, f"conflict: several EHR resources carry this {res_type}'s identifier", None
            )
        raise self._rejected(response, what)

    async def _update(self, plan: _Plan, ehr_id: str) -> str | None:
        assert plan.state is not None
        res_type = plan.stored.res_type
        if plan.state.ehr_version is not None:
            response = await self._put(plan, ehr_id, plan.ours, plan.state.ehr_version)
            if response.status in (200, 201):
                _, version = self._written(response, res_type)
                self._record(plan, ehr_id, version, {**plan.ours, "id": ehr_id})
                return "updated"
            if response.status in (404, 410):
                raise self._conflict(
                    plan, f"conflict: the {res_type} was deleted in the EHR", ehr_id
                )
            if response.status not in (409, 412):
                raise self._rejected(response, self._what("PUT", res_type, "update"))
            if self._state_moved(plan):
                return None  # another push landed meanwhile: plan again on its result
        theirs, version = await self._read_ehr(plan, ehr_id)
        return await self._merge(plan, ehr_id, theirs, version, base=plan.state.pushed_content)

    async def _merge(
        self,
        plan: _Plan,
        ehr_id: str,
        theirs: dict[str, Any],
        version: str | None,
        *,
        base: dict[str, Any] | None,
    ) -> str:
        res_type = plan.stored.res_type
        for _ in range(MAX_MERGE_ROUNDS):
            merged, collisions = three_way_merge(base, plan.ours, theirs)
            if collisions:
                raise self._conflict(
                    plan,
                    f"conflict: {res_type} {', '.join(collisions)} changed in CareCoord and in "
                    f"the EHR",
                    ehr_id,
                )
            if _same(merged, theirs):
                self._record(plan, ehr_id, version, theirs)
                return "unchanged"
            response = await self._put(plan, ehr_id, merged, version)
            if response.status in (200, 201):
                _, new_version = self._written(response, res_type)
                self._record(plan, ehr_id, new_version, {**merged, "id": ehr_id})
                return "merged"
            if response.status in (404, 410):
                raise self._conflict(
                    plan, f"conflict: the {res_type} was deleted in the EHR", ehr_id
                )
            if response.status not in (409, 412):
                raise self._rejected(response, self._what("PUT", res_type, "update"))
            theirs, version = await self._read_ehr(plan, ehr_id)
        raise TemporaryError(
            f"the EHR '{self.connection}' {res_type} kept changing during the merge; later"
        )


# -- the job -------------------------------------------------------------------------------------


def _default_runtime(settings: Settings, engine: Engine, clock: Clock) -> SyncRuntime:
    return SyncRuntime(settings, engine, clock=clock)


class PushHandler:
    """The ``sync.push`` handler; ``settings`` None: read them (environment) at the first job."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        runtime_factory: RuntimeFactory = _default_runtime,
    ) -> None:
        self.settings = settings
        self.runtime_factory = runtime_factory

    def _settings(self) -> Settings:
        if self.settings is None:
            try:
                self.settings = load_settings()
            except ConfigError as exc:
                raise Fatal(f"settings: {exc}") from None
        return self.settings

    async def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        name, res_type, local = (payload.get(k) for k in ("connection", "type", "id"))
        if not isinstance(name, str) or not name:
            raise Fatal("the payload names no connection")
        if res_type not in PUSH_TYPES or not isinstance(local, str) or not local:
            raise Fatal("the payload names no pushable resource")
        runtime = self.runtime_factory(self._settings(), ctx.engine, ctx.clock)
        try:
            if runtime.connection(name).read_only:
                raise Fatal(f"EHR '{name}' is read-only; nothing is pushed to it")
            client = await runtime.client(name)
            pusher = Pusher(store=runtime.store, client=client, clock=ctx.clock)
            outcome = await pusher.push(res_type, local)
            log.debug("push to EHR %s: %s %s", name, res_type, outcome)
        except PushConflict as exc:
            raise Fatal(str(exc)) from None
        except TemporaryError as exc:
            raise RetryLater(exc.retry_after, str(exc)) from None
        except (FatalError, SyncError, ConfigError) as exc:
            raise Fatal(str(exc)) from None
        finally:
            await runtime.aclose()


def register_push_handlers(
    registry: Registry,
    *,
    settings: Settings | None = None,
    runtime_factory: RuntimeFactory | None = None,
) -> None:
    """Register ``sync.push`` on ``registry`` (again: only settings and factory are updated)."""
    existing = registry.get(PUSH_KIND)
    if isinstance(existing, PushHandler):
        if settings is not None:
            existing.settings = settings
        if runtime_factory is not None:
            existing.runtime_factory = runtime_factory
        return
    registry.register(
        PUSH_KIND, PushHandler(settings, runtime_factory=runtime_factory or _default_runtime)
    )
