"""PCCM services: load a program's world from the store, decide, and write in one transaction.

Errors (from :mod:`carecoord.fhir.errors`): ``NotFound`` (no such program, patient or
assignment), ``BusinessRule`` (not enrolled, choice window closed, chosen PCP unavailable).
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import partial
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, insert, select, update

from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import BusinessRule, Gone, InvalidRequest, NotFound, PreconditionFailed
from carecoord.fhir.store import FhirStore, Writer, WriteResult
from carecoord.fhir.values import format_instant, to_micros
from carecoord.jobs.clock import Clock, utc_now
from carecoord.pccm.directory import (
    PRIMARY_CARE_CLASSES,
    covers,
    family_links,
    main_source,
    member_place,
    pcp_from_role,
    ref_id,
)
from carecoord.pccm.geo import Geocoder, GeolocationGeocoder
from carecoord.pccm.model import Decision, Member, Panels, Pcp
from carecoord.pccm.program import Program, effective_date, months_after
from carecoord.pccm.ranking import Directory, decide, decide_choice
from carecoord.pccm.resources import (
    Assignment,
    care_team,
    establish_care_task,
    member_notice,
    provenance,
    provenance_id,
    resource_id,
    source_id,
)
from carecoord.pccm.rules import change_right, change_window_end, reenrolment_pcp
from carecoord.pccm.tables import ACTIVE, ENDED, pccm_assignments, pccm_pcp_status, pccm_unassigned

__all__ = ["Batch", "Outcome", "PccmService", "World"]

_PAGE = 1000
#: Ids per ``_id`` search and per ``IN (...)`` list.
_ID_CHUNK = 1000
#: Members decided and written per transaction in a batch (the progress bar moves per chunk).
_CHUNK = 1000
#: Updates between flushes of the writer's buffered rows: an update drops the buffered index rows
#: of the resource it replaces by scanning the whole buffer, so a long run of updates in one
#: transaction flushes now and then to keep that scan short.
_FLUSH_EVERY = 64
#: The columns of an assignment row the services work with (the decision JSON stays in the table).
_ROW_COLUMNS = (
    "id",
    "program",
    "patient_id",
    "seq",
    "pcp_id",
    "practice_id",
    "kind",
    "status",
    "decided_on",
    "ended_on",
    "end_reason",
)


@dataclass
class World:
    """What the rules need about one program, loaded from the store at one moment."""

    program: Program
    today: date
    directory: Directory
    panels: Panels
    members: dict[str, Member]
    patients: dict[str, dict[str, Any]]
    active: dict[str, dict[str, Any]]
    left: set[str] = field(default_factory=set)
    #: The recorded decision (JSON text) of each member left unassigned by an earlier run.
    unassigned: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch run's outcomes and the world (panels after the run) it worked on."""

    outcomes: list[Outcome]
    world: World


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision and, when written, the assignment's row id and source id."""

    decision: Decision
    written: bool
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Change:
    """An assignment to write: the decision, its kind, and what happens to an active one."""

    decision: Decision
    kind: str
    cause: str | None = None
    #: End reason of the member's active assignment, which this one replaces; None: an active
    #: assignment means the member is already assigned (a replay or a concurrent run).
    replaces: str | None = None


def _read_json(w: Writer, res_type: str, res_id: str) -> dict[str, Any] | None:
    """The current content of a resource, None when absent or deleted."""
    try:
        content = w.read(res_type, res_id).content
    except (NotFound, Gone):
        return None
    return orjson.loads(content) if content else None


def _rows(conn: Connection, program: str, *, patient: str | None = None) -> list[dict[str, Any]]:
    t = pccm_assignments
    q = select(*(t.c[c] for c in _ROW_COLUMNS)).where(t.c.program == program)
    if patient is not None:
        q = q.where(t.c.patient_id == patient)
    return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.patient_id, t.c.seq))]


def _chunks(items: Sequence[str], size: int = _ID_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _member_state(
    conn: Connection, program: str, members: Sequence[str]
) -> dict[str, tuple[int, dict[str, Any] | None]]:
    """(highest seq, active row or None) of each member with assignment rows in ``program``."""
    t = pccm_assignments
    out: dict[str, tuple[int, dict[str, Any] | None]] = {}
    for part in _chunks(members):
        q = select(*(t.c[c] for c in _ROW_COLUMNS)).where(
            t.c.program == program, t.c.patient_id.in_(part)
        )
        for r in conn.execute(q):
            row = dict(r._mapping)
            seq, active = out.get(row["patient_id"], (0, None))
            out[row["patient_id"]] = (
                max(seq, int(row["seq"])),
                row if row["status"] == ACTIVE else active,
            )
    return out


def _lock_program(w: Writer, program: str) -> None:
    """Serialise the transactions that write ``program``'s assignment rows (PostgreSQL; SQLite
    writers are serialised already), so the active-row check holds until commit. Every writer
    of those rows takes it first; taking it again in the same transaction returns at once.

    One lock per program rather than per member: a batch transaction covers 1,000 members, and
    advisory locks share PostgreSQL's lock table (``max_locks_per_transaction``). A member's
    choice waits at most for the batch transaction under way.
    """
    w.lock(f"pccm:{program}")


def _flush_now_and_then(w: Writer, n: int) -> None:
    if n % _FLUSH_EVERY == _FLUSH_EVERY - 1:
        w.flush()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch runs (if it runs at all).

    A batch builds a large world that lives until it ends (every member, PCP and Patient, then
    the outcomes) and makes next to no cyclic garbage, while each full collection walks every
    object there is: with 100,000 members the collector spent seconds walking the world again
    and again. Reference counting still frees everything else at once; collections resume when
    the batch ends, with what the batch made filed as old (``freeze`` then ``unfreeze`` moves
    it to the oldest generation), so that the first collection does not walk all of it as
    young. That filing is left out if the process keeps frozen objects of its own.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        gc.enable()


def _with_pcp(patient: dict[str, Any], pcp: Pcp) -> dict[str, Any]:
    """``patient`` with ``pcp`` as its generalPractitioner (other kinds of reference kept)."""
    kept = [
        gp
        for gp in patient.get("generalPractitioner", ())
        if not ref_id(gp, "PractitionerRole") and not ref_id(gp, "Practitioner")
    ]
    ref = {"reference": f"PractitionerRole/{pcp.id}", **({"display": pcp.name} if pcp.name else {})}
    return {**patient, "generalPractitioner": [ref, *kept]}


def _version(resource: dict[str, Any]) -> int | None:
    version = (resource.get("meta") or {}).get("versionId")
    return int(version) if isinstance(version, str) and version.isdigit() else None


class PccmService:
    """Assignment, choice, re-enrolment and PCP leaving over one FHIR store."""

    def __init__(
        self,
        store: FhirStore,
        programs: dict[str, Program],
        *,
        geocoder: Geocoder | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.programs = programs
        self.geocoder: Geocoder = geocoder or GeolocationGeocoder()
        self.clock = clock

    # -- loading -----------------------------------------------------------------------------

    def program(self, name: str) -> Program:
        try:
            return self.programs[name]
        except KeyError:
            raise NotFound(f"No PCCM program named {name!r}") from None

    def _search(self, res_type: str, params: Sequence[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            extra = [("_count", str(_PAGE))] + ([("_cursor", cursor)] if cursor else [])
            page = self.store.search(self.store.parse(res_type, [*params, *extra]))
            for _, _, content in page.matches:
                yield orjson.loads(content)
            cursor = page.next_cursor
            if not cursor:
                return

    def _by_id(self, res_type: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted({i for i in ids if i and "," not in i and "\\" not in i})
        out: dict[str, dict[str, Any]] = {}
        for part in _chunks(wanted):
            for res in self._search(res_type, [("_id", ",".join(part))]):
                out[str(res["id"])] = res
        return out

    def load_directory(self, program: Program, left: set[str]) -> Directory:
        roles = [
            r
            for r in self._search(
                "PractitionerRole", [("specialty", ",".join(program.specialties))]
            )
            if str(r.get("id")) not in left
        ]
        practitioners = self._by_id(
            "Practitioner", (ref_id(r.get("practitioner"), "Practitioner") or "" for r in roles)
        )
        locations = self._by_id(
            "Location",
            (ref_id(ref, "Location") or "" for r in roles for ref in r.get("location", ())),
        )
        pcps: list[Pcp] = []
        for role in roles:
            prac = practitioners.get(ref_id(role.get("practitioner"), "Practitioner") or "")
            pcp = pcp_from_role(role, program, practitioner=prac, locations=locations)
            if pcp is not None:
                pcps.append(pcp)
        return Directory(pcps)

    def load(self, program: Program, *, today: date | None = None) -> World:
        """Members, PCPs, panels, history and family of ``program`` on ``today``."""
        today = today or self.clock().date()
        with self.store.engine.connect() as conn:
            rows = _rows(conn, program.name)
            left = {
                r.pcp_id
                for r in conn.execute(
                    select(pccm_pcp_status.c.pcp_id).where(
                        pccm_pcp_status.c.program == program.name
                    )
                )
            }
            u = pccm_unassigned
            unassigned = {
                r.patient_id: r.decision
                for r in conn.execute(
                    select(u.c.patient_id, u.c.decision).where(u.c.program == program.name)
                )
            }
        directory = self.load_directory(program, left)
        subscribers: dict[str, str] = {}
        member_ids: set[str] = set()
        # Every Coverage once, in _lastUpdated order, selected here by ``covers``: the store pages
        # that order off an index, while a class-value filter (or the default order) costs a
        # pass over all matches per page of 1,000 (docs/adr/0017-pccm-assignment.md).
        for cov in self._search("Coverage", [("_sort", "_lastUpdated")]):
            pid = ref_id(cov.get("beneficiary"), "Patient")
            if pid and covers(cov, program, today):
                member_ids.add(pid)
                sub = (cov.get("subscriber") or {}).get("reference")
                if isinstance(sub, str):
                    subscribers[pid] = sub
        patients = self._by_id("Patient", member_ids)
        panels = Panels()
        active: dict[str, dict[str, Any]] = {}
        ended: dict[str, list[tuple[str, date, str]]] = defaultdict(list)
        for row in rows:
            if row["status"] == ACTIVE:
                active[row["patient_id"]] = row
                panels.seed(row["patient_id"], row["pcp_id"], row["practice_id"])
            elif row["ended_on"]:
                ended[row["patient_id"]].append(
                    (row["pcp_id"], date.fromisoformat(row["ended_on"]), row["end_reason"] or "")
                )
        history = self._history(program, directory, today, set(patients))
        related = list(self._search("RelatedPerson", [])) if patients else []
        family = family_links(patients, related, subscribers)
        members: dict[str, Member] = {}
        for pid, patient in patients.items():
            age, sex, location, languages = member_place(patient, today, self.geocoder)
            previous, kind = self._previous(pid, patient, active, ended, directory, program, today)
            relatives = tuple(sorted(family.get(pid, ())))
            members[pid] = Member(
                id=pid,
                age=age,
                sex=sex,
                location=location,
                languages=languages,
                previous_pcp=previous,
                previous_kind=kind,
                history_pcp=history.get(pid),
                family=relatives,
                family_history_pcps=tuple(sorted({history[f] for f in relatives if f in history})),
            )
        return World(program, today, directory, panels, members, patients, active, left, unassigned)

    def _previous(
        self,
        pid: str,
        patient: dict[str, Any],
        active: dict[str, dict[str, Any]],
        ended: dict[str, list[tuple[str, date, str]]],
        directory: Directory,
        program: Program,
        today: date,
    ) -> tuple[str | None, str]:
        if pid in active:
            return str(active[pid]["pcp_id"]), "active"
        back = reenrolment_pcp(ended.get(pid, []), today, program.reenrolment_gap_months)
        if back is not None:
            return back, "re-enrolment"
        for gp in patient.get("generalPractitioner", ()):
            role = ref_id(gp, "PractitionerRole")
            if role and role in directory:
                return role, "active"
            prac = ref_id(gp, "Practitioner")
            if prac and prac in directory.by_practitioner:
                return directory.by_practitioner[prac], "active"
        return None, "active"

    def _history(
        self, program: Program, directory: Directory, today: date, patients: set[str]
    ) -> dict[str, str]:
        """Main source of primary care per patient over the program's look-back."""
        if not patients:
            return {}
        since = months_after(today, -program.history_months).isoformat()
        visits: dict[str, list[tuple[str, str]]] = defaultdict(list)
        # The class is checked here rather than in the search: each search condition costs a
        # pass over all its matches per page.
        for enc in self._search("Encounter", [("date", f"ge{since}")]):
            pid = ref_id(enc.get("subject"), "Patient")
            if (
                pid not in patients
                or enc.get("status") in ("cancelled", "entered-in-error")
                or (enc.get("class") or {}).get("code") not in PRIMARY_CARE_CLASSES
            ):
                continue
            day = str((enc.get("period") or {}).get("start", ""))[:10]
            seen: set[str] = set()
            for part in enc.get("participant", ()):
                ind = part.get("individual")
                pcp = ref_id(ind, "PractitionerRole")
                if pcp not in directory:
                    pcp = directory.by_practitioner.get(ref_id(ind, "Practitioner") or "")
                if pcp and pcp not in seen:
                    seen.add(pcp)
                    visits[pid or ""].append((pcp, day))
        out: dict[str, str] = {}
        for pid, pairs in visits.items():
            best = main_source(pairs, program.min_history_visits)
            if best is not None:
                out[pid] = best
        return out

    # -- writing ------------------------------------------------------------------------------

    def _write(self, w: Writer, world: World, changes: Sequence[_Change]) -> list[str | None]:
        """Write assignments (rows and resources) in ``w``'s transaction; their source ids.

        A member's entry is None when they already have an active assignment (a replay or a
        concurrent run) and the change replaces none. Reads and row writes go per chunk, not per
        member: the members' rows in one query, the new rows in one statement.
        """
        program = world.program
        name = program.name
        _lock_program(w, name)
        state = _member_state(w.conn, name, [c.decision.member for c in changes])
        now = self.clock()
        decided_at = to_micros(now)
        recorded = format_instant(decided_at)
        effective = effective_date(program.effective_date, world.today)
        change_until = change_window_end(program, world.today)
        due = effective + timedelta(days=program.establish_care_due_days)
        plans: list[tuple[Assignment, _Change]] = []
        ending: list[tuple[dict[str, Any], str]] = []
        out: list[str | None] = []
        for c in changes:
            d = c.decision
            assert d.pcp is not None
            last, current = state.get(d.member, (0, None))
            if current is not None:
                if c.replaces is None:
                    out.append(None)
                    continue
                ending.append((current, c.replaces))
            a = Assignment(
                program=program,
                patient_id=d.member,
                seq=last + 1,
                pcp=world.directory.pcps[d.pcp],
                decision=d,
                kind=c.kind,
                decided_on=world.today,
                effective_on=effective,
                change_until=change_until,
                due_on=due,
                recorded=recorded,
            )
            plans.append((a, c))
            out.append(source_id(name, d.member, a.seq))
        if ending:
            self._end(w, ending, world.today)
        if not plans:
            return out
        w.conn.execute(
            insert(pccm_assignments),
            [
                {
                    "program": name,
                    "patient_id": a.patient_id,
                    "seq": a.seq,
                    "pcp_id": a.pcp.id,
                    "practice_id": a.pcp.practice,
                    "rule": a.decision.rule or a.kind,
                    "kind": a.kind,
                    "status": ACTIVE,
                    "decided_on": a.decided_on.isoformat(),
                    "effective_on": a.effective_on.isoformat(),
                    "change_until": a.change_until.isoformat(),
                    "distance_miles": a.decision.distance_miles,
                    "outside_standard": a.decision.outside_standard,
                    "decision": orjson.dumps(a.decision.to_json()).decode(),
                    "cause": c.cause,
                    "decided_at": decided_at,
                }
                for a, c in plans
            ],
        )
        u = pccm_unassigned
        for part in _chunks([a.patient_id for a, _ in plans]):
            w.conn.execute(u.delete().where(u.c.program == name, u.c.patient_id.in_(part)))
        self._write_resources(w, world, [a for a, _ in plans])
        return out

    def _write_resources(self, w: Writer, world: World, plans: Sequence[Assignment]) -> None:
        """Patient.generalPractitioner, CareTeam, Task and notice of each assignment, and one
        Provenance of them all.

        Updates first (flushing now and then, see ``_FLUSH_EVERY``), creates after. Resource ids
        are fixed, derived from (program, patient, seq) like the identifiers inside: the rows'
        keys make the Task, notice and Provenance ids new in this transaction, so they are
        created without an existence query each (a duplicate still fails the insert). The care
        team id is per member: one query finds which exist (live or deleted). The Patient is
        written from the version loaded with the world unless it changed since (``_set_pcp``).
        """
        name = world.program.name
        team_ids = [resource_id("careteam", name, a.patient_id) for a in plans]
        teams = w.taken("CareTeam", team_ids)
        patient_refs: list[str] = []
        for n, a in enumerate(plans):
            _flush_now_and_then(w, n)
            written = self._set_pcp(w, world.patients.get(a.patient_id), a)
            patient_refs.append(f"Patient/{a.patient_id}/_history/{written.resource.version_id}")
            if team_ids[n] in teams:
                existing = _read_json(w, "CareTeam", team_ids[n])
                w.update("CareTeam", team_ids[n], care_team(a, existing))
        sids: list[str] = []
        targets: list[str] = []
        for n, a in enumerate(plans):
            if team_ids[n] not in teams:
                w.update("CareTeam", team_ids[n], care_team(a, None), known_new=True)
            sid = source_id(name, a.patient_id, a.seq)
            task = w.create(
                "Task",
                establish_care_task(a),
                res_id=resource_id("task", name, a.patient_id, a.seq),
                known_new=True,
            )
            notice = w.create(
                "Communication",
                member_notice(a),
                res_id=resource_id("notice", name, a.patient_id, a.seq),
                known_new=True,
            )
            targets += [
                patient_refs[n],
                f"CareTeam/{team_ids[n]}",
                f"Task/{task.resource.res_id}",
                f"Communication/{notice.resource.res_id}",
            ]
            sids.append(sid)
        w.create(
            "Provenance", provenance(plans, targets), res_id=provenance_id(sids), known_new=True
        )

    def _set_pcp(self, w: Writer, loaded: dict[str, Any] | None, a: Assignment) -> WriteResult:
        """Update the Patient's generalPractitioner from the version loaded with the world; the
        current version is read only when the Patient changed since."""
        version = _version(loaded) if loaded is not None else None
        if loaded is not None and version is not None:
            try:
                return w.update("Patient", a.patient_id, _with_pcp(loaded, a.pcp), if_match=version)
            except PreconditionFailed:
                pass
        current = orjson.loads(w.read("Patient", a.patient_id).content or b"{}")
        return w.update("Patient", a.patient_id, _with_pcp(current, a.pcp))

    def _end(
        self,
        w: Writer,
        ending: Sequence[tuple[dict[str, Any], str]],
        today: date,
        *,
        vacate: bool = False,
    ) -> None:
        """End assignments (row, end reason); their establish-care Tasks, if not started, are
        cancelled.

        ``vacate`` (no new PCP follows): the PCP leaves Patient.generalPractitioner and the
        CareTeam participant's period ends.
        """
        if not ending:
            return
        for program in sorted({row["program"] for row, _ in ending}):
            _lock_program(w, program)
        t = pccm_assignments
        w.conn.execute(
            update(t)
            .where(t.c.id == bindparam("row_id"))
            .values(status=ENDED, ended_on=today.isoformat(), end_reason=bindparam("reason")),
            [{"row_id": row["id"], "reason": reason} for row, reason in ending],
        )
        for n, (row, reason) in enumerate(ending):
            _flush_now_and_then(w, n)
            task_id = resource_id("task", row["program"], row["patient_id"], row["seq"])
            task = _read_json(w, "Task", task_id)
            if task is not None and task.get("status") in ("draft", "requested", "ready"):
                task["status"] = "cancelled"
                task["statusReason"] = {"text": f"PCCM assignment ended ({reason})"}
                w.update("Task", task_id, task)
            if vacate:
                self._vacate(w, row, today)

    def _vacate(self, w: Writer, row: dict[str, Any], today: date) -> None:
        ref = f"PractitionerRole/{row['pcp_id']}"
        patient = _read_json(w, "Patient", row["patient_id"])
        gps = (patient or {}).get("generalPractitioner", [])
        if patient is not None and any(gp.get("reference") == ref for gp in gps):
            patient["generalPractitioner"] = [gp for gp in gps if gp.get("reference") != ref]
            if not patient["generalPractitioner"]:
                del patient["generalPractitioner"]
            w.update("Patient", row["patient_id"], patient)
        team_id = resource_id("careteam", row["program"], row["patient_id"])
        team = _read_json(w, "CareTeam", team_id)
        if team is not None:
            for part in team.get("participant", ()):
                period = part.setdefault("period", {})
                if part.get("member", {}).get("reference") == ref and not period.get("end"):
                    period["end"] = today.isoformat()
            w.update("CareTeam", team_id, team)

    def _unassigned(self, w: Writer, program: str, decisions: Sequence[Decision]) -> None:
        """Record why these members are left without a PCP (the latest reason per member)."""
        if not decisions:
            return
        _lock_program(w, program)
        t = pccm_unassigned
        for part in _chunks([d.member for d in decisions]):
            w.conn.execute(t.delete().where(t.c.program == program, t.c.patient_id.in_(part)))
        decided_at = to_micros(self.clock())
        w.conn.execute(
            insert(t),
            [
                {
                    "program": program,
                    "patient_id": d.member,
                    "decision": orjson.dumps(d.to_json()).decode(),
                    "decided_at": decided_at,
                }
                for d in decisions
            ],
        )

    # -- batch ---------------------------------------------------------------------------------

    def assign_all(
        self,
        program_name: str,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        today: date | None = None,
    ) -> list[Outcome]:
        """:meth:`run_batch`'s outcomes."""
        return self.run_batch(
            program_name, dry_run=dry_run, progress=progress, today=today
        ).outcomes

    def run_batch(
        self,
        program_name: str,
        *,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        today: date | None = None,
    ) -> Batch:
        """Assign every enrolled member without an active assignment, in id order.

        Members no longer covered lose their assignment first (``disenrolled``; they come back to
        the same PCP when re-enrolled within the gap). A member still left unassigned for the
        same reasons as last time writes nothing, so a re-run over unchanged data writes nothing.
        A dry run writes nothing at all.
        """
        program = self.program(program_name)
        with _collector_paused():
            world = self.load(program, today=today)
            return self._run_batch(world, dry_run=dry_run, progress=progress)

    def _run_batch(
        self, world: World, *, dry_run: bool, progress: Callable[[int, int], None] | None
    ) -> Batch:
        program = world.program
        if not dry_run:
            lapsed = sorted(set(world.active) - set(world.members))
            for part in _chunks(lapsed, _CHUNK):
                ending = [(world.active[p], "disenrolled") for p in part]
                self.store.write(partial(self._end, ending=ending, today=world.today, vacate=True))
                for p in part:
                    del world.active[p]
                    world.panels.remove(p)
        todo = sorted(p for p in world.members if p not in world.active)
        outcomes: list[Outcome] = []
        for start in range(0, len(todo), _CHUNK):
            decisions = []
            for pid in todo[start : start + _CHUNK]:
                decision = decide(world.members[pid], world.directory, world.panels, program)
                if decision.pcp is not None:
                    world.panels.add(pid, world.directory.pcps[decision.pcp])
                decisions.append(decision)
            if dry_run:
                outcomes.extend(Outcome(d, False) for d in decisions)
            else:
                outcomes.extend(self._write_batch_chunk(world, decisions))
            if progress is not None:
                progress(min(start + _CHUNK, len(todo)), len(todo))
        return Batch(outcomes, world)

    def _write_batch_chunk(self, world: World, decisions: list[Decision]) -> list[Outcome]:
        name = world.program.name
        assigned = [_Change(d, "auto") for d in decisions if d.pcp is not None]
        unassigned = [
            d
            for d in decisions
            if d.pcp is None
            and world.unassigned.get(d.member) != orjson.dumps(d.to_json()).decode()
        ]
        if not assigned and not unassigned:
            return [Outcome(d, False) for d in decisions]

        def work(w: Writer) -> list[str | None]:
            self._unassigned(w, name, unassigned)
            return self._write(w, world, assigned) if assigned else []

        sids = iter(self.store.write(work))
        out: list[Outcome] = []
        for d in decisions:
            sid = next(sids) if d.pcp is not None else None
            out.append(Outcome(d, sid is not None, sid))
        return out

    # -- member choice ---------------------------------------------------------------------------

    def choose(
        self,
        program_name: str,
        patient_id: str,
        pcp_id: str,
        *,
        cause: str | None = None,
        policy: AccessPolicy | None = None,
        audit: Callable[[Writer], None] | None = None,
    ) -> Outcome:
        """The member chooses (or changes to) ``pcp_id``; ``cause`` makes it a change for cause.

        Writes under ``policy``; ``audit`` runs inside the same transaction.
        """
        program = self.program(program_name)
        world = self.load(program)
        member = world.members.get(patient_id)
        if member is None:
            raise BusinessRule("The patient is not enrolled in this program")
        current = world.active.get(patient_id)
        kind = "choice"
        if current is not None:
            if current["pcp_id"] == pcp_id:
                raise BusinessRule("The member is already assigned to this PCP")
            with self.store.engine.connect() as conn:
                history = _rows(conn, program.name, patient=patient_id)
            changes = [
                date.fromisoformat(r["decided_on"])
                for r in history
                if r["kind"] == "choice" and r["seq"] > 1
            ]
            right = change_right(
                program,
                today=world.today,
                notice_date=date.fromisoformat(current["decided_on"]),
                assigned_since=date.fromisoformat(current["decided_on"]),
                last_change_without_cause=max(changes) if changes else None,
                for_cause=bool(cause),
            )
            if not right.allowed:
                raise BusinessRule(f"A change without cause is not possible now: {right.basis}")
            if cause:
                kind = "change-for-cause"
            world.panels.remove(patient_id)
        elif cause is not None and not cause.strip():
            raise InvalidRequest("cause must not be empty")
        decision = decide_choice(member, pcp_id, world.directory, world.panels, program)
        if decision.pcp is None:
            raise BusinessRule(f"The chosen PCP cannot take the member: {decision.reason}")

        def work(w: Writer) -> str | None:
            [sid] = self._write(w, world, [_Change(decision, kind, cause, replaces="changed")])
            if audit is not None:
                audit(w)
            return sid

        sid = self.store.write(work, policy=policy)
        return Outcome(decision, sid is not None, sid)

    # -- a PCP leaving the program -----------------------------------------------------------

    def pcp_leaves(
        self, program_name: str, pcp_id: str, *, reason: str | None = None
    ) -> list[Outcome]:
        """Mark ``pcp_id`` as out of the program and reassign their panel by the same rules."""
        program = self.program(program_name)
        today = self.clock().date()

        def mark(w: Writer) -> None:
            s = pccm_pcp_status
            w.conn.execute(s.delete().where(s.c.program == program.name, s.c.pcp_id == pcp_id))
            w.conn.execute(
                insert(s).values(
                    program=program.name,
                    pcp_id=pcp_id,
                    status="left",
                    since=today.isoformat(),
                    reason=(reason or "")[:200] or None,
                )
            )

        self.store.write(mark)
        world = self.load(program, today=today)
        panel = sorted(p for p, row in world.active.items() if row["pcp_id"] == pcp_id)
        outcomes: list[Outcome] = []
        for start in range(0, len(panel), _CHUNK):
            chunk = panel[start : start + _CHUNK]
            decisions: list[Decision] = []
            for pid in chunk:
                world.panels.remove(pid)
                member = world.members.get(pid)
                if member is None:
                    continue
                member = replace(member, previous_pcp=pcp_id)
                decision = decide(member, world.directory, world.panels, program)
                if decision.pcp is not None:
                    world.panels.add(pid, world.directory.pcps[decision.pcp])
                decisions.append(decision)

            def work(w: Writer, decisions: list[Decision] = decisions) -> list[Outcome]:
                left = [d for d in decisions if d.pcp is None]
                self._end(
                    w,
                    [(world.active[d.member], "pcp-left") for d in left],
                    today,
                    vacate=True,
                )
                self._unassigned(w, program.name, left)
                moved = [
                    _Change(d, "reassignment", replaces="pcp-left")
                    for d in decisions
                    if d.pcp is not None
                ]
                sids = iter(self._write(w, world, moved) if moved else [])
                out: list[Outcome] = []
                for d in decisions:
                    sid = next(sids) if d.pcp is not None else None
                    out.append(Outcome(d, sid is not None, sid))
                return out

            outcomes.extend(self.store.write(work))
        return outcomes

    # -- reading ---------------------------------------------------------------------------------

    def assignments_of(self, patient_id: str, *, current_only: bool) -> list[dict[str, Any]]:
        """The member's assignments (all programs), newest first, with their decisions."""
        t = pccm_assignments
        q = select(t).where(t.c.patient_id == patient_id)
        if current_only:
            q = q.where(t.c.status == ACTIVE)
        out: list[dict[str, Any]] = []
        with self.store.engine.connect() as conn:
            for row in conn.execute(q.order_by(t.c.program, t.c.seq.desc())):
                r = dict(row._mapping)
                out.append(
                    {
                        "program": r["program"],
                        "seq": r["seq"],
                        "pcp": f"PractitionerRole/{r['pcp_id']}",
                        "practice": f"Organization/{r['practice_id']}"
                        if r["practice_id"]
                        else None,
                        "rule": r["rule"],
                        "kind": r["kind"],
                        "status": r["status"],
                        "decidedOn": r["decided_on"],
                        "effectiveOn": r["effective_on"],
                        "changeUntil": r["change_until"],
                        "endedOn": r["ended_on"],
                        "endReason": r["end_reason"],
                        "cause": r["cause"],
                        "decision": orjson.loads(r["decision"]),
                    }
                )
            unassigned = [
                {"program": u.program, "decision": orjson.loads(u.decision)}
                for u in conn.execute(
                    select(pccm_unassigned).where(pccm_unassigned.c.patient_id == patient_id)
                )
            ]
        if current_only:
            out.extend({"status": "unassigned", **u} for u in unassigned)
        return out
