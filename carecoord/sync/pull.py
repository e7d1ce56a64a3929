"""Incremental pull of one population from one EHR connection.

A run fixes the population's patients, then pulls type by type (:mod:`carecoord.sync.plan`):
patient types with ``patient=<ids>`` (``_id`` for Patient) in chunks of ``ids_per_search``;
referenced types (Practitioner, PractitionerRole, Organization, Location) with ``_id=<ids>`` of
what pulled resources refer to. Patients new to the population (and every patient before a type's
first completed pull) are fetched whole; the others with ``_lastUpdated=gt{since - overlap}``.

**Each page commits in one transaction with its checkpoint**: the resources (validated, ids and
references made local, skipped when the source version is already stored; stored with
:func:`~carecoord.sync.upsert.upsert_from_source`, which also adopts Patients and Encounters an
ADT message created before the first pull), their source identities, the identities of what they
refer to, the run's counts and the position (last completed chunk, next page URL). A crash
after a commit resumes from that page; a crash before it loses nothing, and the rerun duplicates
nothing. A type's ``since`` moves, with its last page, to the EHR's time (``Date``) at the type's
first page of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import Connection

from carecoord.db import read_connection, run_write
from carecoord.events.encounters import encounter_hook
from carecoord.fhir.errors import FhirError
from carecoord.fhir.store import FhirStore, Writer
from carecoord.fhir.validation import validate_resource
from carecoord.jobs.clock import Clock, to_micros, utc_now
from carecoord.sync.client import EhrClient, SearchPage
from carecoord.sync.config import ConnectionSync, Population
from carecoord.sync.errors import CircuitOpen, PullStopped, RequestRejected, SyncError
from carecoord.sync.health import record_outcome
from carecoord.sync.identity import Key, ReferenceMapper, list_source_ids
from carecoord.sync.plan import TypePlan, plan_for
from carecoord.sync.population import resolve_members
from carecoord.sync.state import (
    FAILED,
    OK,
    Checkpoint,
    Counts,
    Run,
    add_counts,
    create_run,
    finish_run,
    last_members,
    load_checkpoint,
    mark_running,
    run_counts,
    save_checkpoint,
    unfinished_run,
)
from carecoord.sync.upsert import SourceItem, UpsertResult, upsert_from_source

__all__ = ["PageReport", "PullReport", "Puller", "error_text", "format_instant", "pull"]

log = logging.getLogger("carecoord.sync.pull")

#: Identities remembered as settled (then the memory starts again).
_SETTLED_LIMIT = 200_000
WHOLE, CHANGED = 0, 1  # chunk modes: everything of these patients / changes since the checkpoint


@dataclass(frozen=True, slots=True)
class PageReport:
    """Handed to the progress callback after each committed page."""

    connection: str
    population: str
    res_type: str
    run_id: int
    counts: Counts


@dataclass
class PullReport:
    """What one call of :meth:`Puller.run` did (a resumed run counts only its own part)."""

    connection: str
    population: str
    run_id: int = 0
    resumed: bool = False
    members: int = 0
    new_members: int = 0
    counts: Counts = field(default_factory=Counts)
    by_type: dict[str, Counts] = field(default_factory=dict)
    run_counts: Counts = field(default_factory=Counts)

    def add(self, res_type: str, counts: Counts) -> None:
        self.counts = self.counts + counts
        self.by_type[res_type] = self.by_type.get(res_type, Counts()) + counts


Progress = Callable[[PageReport], None]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One search's worth of ids, in a mode; ``key`` orders chunks for resuming."""

    mode: int
    ids: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.mode}:{self.ids[0]}:{self.ids[-1]}"

    @property
    def order(self) -> tuple[int, str]:
        return self.mode, self.ids[-1]


def format_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with second precision (floored)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _chunk_order(key: str | None) -> tuple[int, str] | None:
    if not key:
        return None
    mode, _, rest = key.partition(":")
    _, _, last = rest.partition(":")
    return (int(mode), last) if mode.isdigit() else None


def error_text(exc: BaseException) -> str:
    """What a failure records: our errors' messages (no PHI by design), else the type only."""
    if isinstance(exc, SyncError):
        message = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return type(exc).__name__


def _split(ids: Sequence[str], size: int) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(ids), size):
        yield tuple(ids[start : start + size])


class Puller:
    """Pulls populations from one connection into the store."""

    def __init__(
        self,
        *,
        store: FhirStore,
        client: EhrClient,
        settings: ConnectionSync | None = None,
        clock: Clock = utc_now,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.engine = store.engine
        self.client = client
        self.connection = client.name
        self.settings = settings or client.limits
        self.clock = clock
        self.progress = progress
        self.mapper = ReferenceMapper(client.name, client.base)
        self.plans = plan_for(self.settings.types)
        #: (type, source id) -> local id of identities that cannot change any more (recorded,
        #: and for Patients and Encounters stored), so later pages need not look them up.
        self._settled: dict[Key, str] = {}

    def _now(self) -> int:
        return to_micros(self.clock())

    # -- the run ---------------------------------------------------------------------------------

    async def run(self, population: Population) -> PullReport:
        """Pull (or resume pulling) ``population``; records the outcome and re-raises failures."""
        report = PullReport(self.connection, population.key)
        run: Run | None = None
        try:
            run = await self._open(population)
            report.run_id, report.resumed = run.id, run.resumed
            report.members, report.new_members = len(run.members), len(run.new_members)
            # Patient types side by side (each its own checkpoint); then the referenced types in
            # order, once everything that may refer to them is stored.
            patient_types = [p for p in self.plans if p.by_patient]
            await self._together([partial(self._pull_type, run, p, report) for p in patient_types])
            for plan in self.plans:
                if not plan.by_patient:
                    await self._pull_type(run, plan, report)
            await asyncio.to_thread(run_write, self.engine, lambda c: self._finish(c, run))
        except BaseException as exc:
            if isinstance(exc, Exception) and not isinstance(exc, PullStopped):
                await asyncio.to_thread(self._record_failure, run, exc)
            raise
        report.run_counts = await asyncio.to_thread(self._run_counts, run.id)
        log.info(
            "pull %s/%s run %d done: %d fetched, %d written, %d skipped, %d rejected",
            self.connection,
            population.key,
            run.id,
            report.counts.fetched,
            report.counts.written,
            report.counts.skipped,
            report.counts.rejected,
        )
        return report

    async def _together(self, streams: list[Callable[[], Awaitable[None]]]) -> None:
        """Run ``streams`` with at most ``stream_concurrency`` at a time; the first failure
        cancels the others and is raised."""
        limit = asyncio.Semaphore(self.settings.stream_concurrency)

        async def bounded(stream: Callable[[], Awaitable[None]]) -> None:
            async with limit:
                await stream()

        tasks = [asyncio.ensure_future(bounded(s)) for s in streams]
        try:
            while tasks:
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                failures = [t.exception() for t in done if t.exception() is not None]
                if failures:
                    # the cause rather than the open circuit it left for the other streams
                    failures.sort(key=lambda exc: isinstance(exc, CircuitOpen))
                    raise failures[0]  # type: ignore[misc]
                tasks = list(pending)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def _open(self, population: Population) -> Run:
        def find(conn: Connection) -> Run | None:
            found = unfinished_run(conn, self.connection, population.key)
            if found is not None:
                mark_running(conn, found.id)
            return found

        resumed = await asyncio.to_thread(run_write, self.engine, find)
        if resumed is not None:
            log.info("pull %s/%s: resuming run %d", self.connection, population.key, resumed.id)
            return resumed
        members = await resolve_members(population, client=self.client, engine=self.engine)

        def create(conn: Connection) -> Run:
            again = unfinished_run(conn, self.connection, population.key)
            if again is not None:
                return again
            known = last_members(conn, self.connection, population.key)
            fresh = [m for m in members if m not in known]
            return create_run(
                conn, self.connection, population.key, members, fresh, now=self._now()
            )

        return await asyncio.to_thread(run_write, self.engine, create)

    def _run_counts(self, run_id: int) -> Counts:
        with read_connection(self.engine) as conn:
            return run_counts(conn, run_id)

    def _finish(self, conn: Connection, run: Run) -> None:
        now = self._now()
        finish_run(conn, run, status=OK, error=None, now=now)
        record_outcome(
            conn, self.connection, ok=True, now=now, circuit=self.client.breaker.snapshot()
        )

    def _record_failure(self, run: Run | None, exc: Exception) -> None:
        text = error_text(exc)
        log.warning("pull %s failed: %s", self.connection, text)

        def work(conn: Connection) -> None:
            now = self._now()
            if run is not None:
                finish_run(conn, run, status=FAILED, error=text, now=now)
            record_outcome(
                conn,
                self.connection,
                ok=False,
                now=now,
                error=text,
                circuit=self.client.breaker.snapshot(),
            )

        try:
            run_write(self.engine, work)
        except Exception as db_exc:  # the original failure matters more
            log.error(
                "pull %s: cannot record the failure: %s", self.connection, type(db_exc).__name__
            )

    # -- one type --------------------------------------------------------------------------------

    def _chunks(self, run: Run, plan: TypePlan, since: str | None) -> list[Chunk]:
        size = self.settings.ids_per_search
        if plan.by_patient:
            members = list(run.members)
            whole = members if since is None else [m for m in members if m in run.new_members]
            changed = [] if since is None else [m for m in members if m not in run.new_members]
        else:
            with read_connection(self.engine) as conn:
                pending = self._all_ids(conn, plan.res_type, pulled=False)
                known = self._all_ids(conn, plan.res_type, pulled=True)
            whole = sorted(pending + known) if since is None else pending
            changed = [] if since is None else known
        return [Chunk(WHOLE, ids) for ids in _split(sorted(whole), size)] + [
            Chunk(CHANGED, ids) for ids in _split(sorted(changed), size)
        ]

    def _all_ids(self, conn: Connection, res_type: str, *, pulled: bool) -> list[str]:
        found: list[str] = []
        after: str | None = None
        while True:
            batch = list_source_ids(
                conn, self.connection, res_type, pulled=pulled, after=after, limit=5000
            )
            found.extend(batch)
            if len(batch) < 5000:
                return found
            after = batch[-1]

    def _params(self, plan: TypePlan, chunk: Chunk, since: str | None) -> list[tuple[str, str]]:
        quirks = self.client.quirks
        param = plan.patient_param or "_id"
        params = [(param, ",".join(chunk.ids)), *plan.fixed]
        if chunk.mode == CHANGED and since is not None:
            start = _parse_instant(since) - timedelta(seconds=self.settings.overlap_seconds)
            params.append(("_lastUpdated", f"gt{format_instant(start)}"))
        params.append(("_count", str(quirks.page_size(self.settings.page_size))))
        return quirks.params(plan.res_type, params)

    async def _pull_type(self, run: Run, plan: TypePlan, report: PullReport) -> None:
        res_type = plan.res_type
        checkpoint = await asyncio.to_thread(self._load, run, res_type)
        if checkpoint.done_run == run.id:
            return  # completed earlier in this run (before a crash)
        resuming = checkpoint.run_id == run.id
        since = checkpoint.since
        chunks = await asyncio.to_thread(self._chunks, run, plan, since)
        done = _chunk_order(checkpoint.last_chunk) if resuming else None
        if done is not None:
            chunks = [c for c in chunks if c.order > done]
        if not resuming:
            checkpoint = checkpoint.started(run.id, None)
        if not chunks:
            final = replace(
                checkpoint,
                since=checkpoint.pending_since or since,
                pending_since=None,
                done_run=run.id,
                last_chunk=None,
                cursor_chunk=None,
                cursor_url=None,
            )
            await asyncio.to_thread(run_write, self.engine, lambda c: self._save(c, final))
            return
        for index, chunk in enumerate(chunks):
            start_url = None
            if resuming and checkpoint.cursor_url and checkpoint.cursor_chunk == chunk.key:
                start_url = checkpoint.cursor_url
            checkpoint = await self._pull_chunk(
                run,
                plan,
                chunk,
                checkpoint,
                since=since,
                start_url=start_url,
                last=index == len(chunks) - 1,
                report=report,
            )

    def _load(self, run: Run, res_type: str) -> Checkpoint:
        with read_connection(self.engine) as conn:
            return load_checkpoint(conn, self.connection, run.population, res_type)

    def _save(self, conn: Connection, checkpoint: Checkpoint) -> None:
        save_checkpoint(conn, checkpoint, now=self._now())

    async def _pull_chunk(
        self,
        run: Run,
        plan: TypePlan,
        chunk: Chunk,
        checkpoint: Checkpoint,
        *,
        since: str | None,
        start_url: str | None,
        last: bool,
        report: PullReport,
    ) -> Checkpoint:
        res_type = plan.res_type
        page = None
        if start_url is not None:
            try:
                page = await self.client.next_page(res_type, start_url)
            except RequestRejected as exc:  # the EHR let the paging link expire
                log.info(
                    "pull %s: the saved %s page link was refused (%d); restarting its chunk",
                    self.connection,
                    res_type,
                    exc.status,
                )
        if page is None:
            page = await self.client.search(res_type, self._params(plan, chunk, since))
        while True:
            following = (
                asyncio.create_task(self.client.next_page(res_type, page.next_url))
                if page.next_url
                else None
            )
            try:
                checkpoint = self._advance(checkpoint, page, chunk, last=last)
                counts = await asyncio.to_thread(self._commit, run, page, checkpoint)
                report.add(res_type, counts)
                if self.progress is not None:
                    self.progress(
                        PageReport(self.connection, run.population, res_type, run.id, counts)
                    )
            except BaseException:
                if following is not None:
                    following.cancel()
                    with contextlib.suppress(BaseException):
                        await following
                raise
            if following is None:
                return checkpoint
            page = await following

    def _advance(
        self, checkpoint: Checkpoint, page: SearchPage, chunk: Chunk, *, last: bool
    ) -> Checkpoint:
        """The checkpoint as it stands once ``page`` is stored."""
        pending = checkpoint.pending_since
        if pending is None:
            pending = format_instant(page.server_time or self.clock())
        if page.next_url is not None:
            return replace(
                checkpoint, pending_since=pending, cursor_chunk=chunk.key, cursor_url=page.next_url
            )
        if not last:
            return replace(
                checkpoint,
                pending_since=pending,
                last_chunk=chunk.key,
                cursor_chunk=None,
                cursor_url=None,
            )
        return replace(
            checkpoint,
            since=pending,
            pending_since=None,
            done_run=checkpoint.run_id,
            last_chunk=None,
            cursor_chunk=None,
            cursor_url=None,
        )

    # -- one page --------------------------------------------------------------------------------

    def _prepare(self, page: SearchPage) -> tuple[list[SourceItem], Counts]:
        """Validate and localise a page's resources (outside the transaction: a retried
        transaction must not localise twice)."""
        items: dict[Key, SourceItem] = {}
        rejected = skipped = 0
        for resource in page.resources:
            if resource.get("resourceType") != page.res_type:
                skipped += 1
                continue
            try:
                validate_resource(resource)
            except FhirError:
                rejected += 1
                log.warning("pull %s: an invalid %s was left out", self.connection, page.res_type)
                continue
            source_id = resource.get("id")
            if not isinstance(source_id, str) or not source_id:
                rejected += 1
                log.warning("pull %s: a %s without id was left out", self.connection, page.res_type)
                continue
            meta = resource.get("meta") or {}
            version, updated = meta.get("versionId"), meta.get("lastUpdated")
            referred = self.mapper.localize(resource)
            items[(page.res_type, source_id)] = SourceItem(
                page.res_type,
                source_id,
                str(version) if version is not None else None,
                str(updated) if updated is not None else None,
                resource,
                frozenset(referred),
            )
        counts = Counts(fetched=len(page.resources), skipped=skipped, rejected=rejected)
        return list(items.values()), counts

    def _commit(self, run: Run, page: SearchPage, checkpoint: Checkpoint) -> Counts:
        items, base = self._prepare(page)

        def work(w: Writer) -> tuple[Counts, UpsertResult]:
            # Encounters that change at the EHR are events for automation, like ADT ones.
            w.on_written = encounter_hook(source=f"sync:{self.connection}")
            now = self._now()
            # References already settled need no lookup: the same patients and encounters come
            # up on every page.
            result = upsert_from_source(w, self.connection, items, now=now, settled=self._settled)
            counts = base + Counts(written=len(result.written), skipped=len(result.skipped))
            save_checkpoint(w.conn, checkpoint, now=now)
            add_counts(w.conn, run.id, counts)
            return counts, result

        counts, result = self.store.write(work)
        if len(self._settled) > _SETTLED_LIMIT:
            self._settled.clear()
        self._settled.update(result.settled)  # committed: these rows exist now
        return counts


async def pull(
    *,
    store: FhirStore,
    client: EhrClient,
    population: Population,
    settings: ConnectionSync | None = None,
    clock: Clock = utc_now,
    progress: Progress | None = None,
) -> PullReport:
    """Pull ``population`` from ``client``'s connection now (see :class:`Puller`)."""
    puller = Puller(store=store, client=client, settings=settings, clock=clock, progress=progress)
    return await puller.run(population)
