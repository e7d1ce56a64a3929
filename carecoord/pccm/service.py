"""PCCM services: load a program's world from the store, decide, and write in one transaction.

Errors (from :mod:`carecoord.fhir.errors`): ``NotFound`` (no such program, patient or
assignment), ``BusinessRule`` (not enrolled, choice window closed, chosen PCP unavailable).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import partial
from typing import Any

import orjson
from sqlalchemy import Connection, func, insert, select, update

from carecoord.fhir.access import AccessPolicy
from carecoord.fhir.errors import BusinessRule, Gone, InvalidRequest, NotFound
from carecoord.fhir.store import FhirStore, Writer
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
    resource_id,
    source_id,
)
from carecoord.pccm.rules import change_right, change_window_end, reenrolment_pcp
from carecoord.pccm.tables import ACTIVE, ENDED, pccm_assignments, pccm_pcp_status, pccm_unassigned

__all__ = ["Batch", "Outcome", "PccmService", "World"]

_PAGE = 1000
_ID_CHUNK = 200
#: Assignments written per transaction in a batch.
_CHUNK = 100


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


def _read_json(w: Writer, res_type: str, res_id: str) -> dict[str, Any] | None:
    """The current content of a resource, None when absent or deleted."""
    try:
        content = w.read(res_type, res_id).content
    except (NotFound, Gone):
        return None
    return orjson.loads(content) if content else None


def _rows(conn: Connection, program: str, *, status: str | None = None) -> list[dict[str, Any]]:
    t = pccm_assignments
    q = select(t).where(t.c.program == program)
    if status:
        q = q.where(t.c.status == status)
    return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.patient_id, t.c.seq))]


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
        wanted = sorted({i for i in ids if i and "," not in i})
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(wanted), _ID_CHUNK):
            for res in self._search(res_type, [("_id", ",".join(wanted[i : i + _ID_CHUNK]))]):
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
        directory = self.load_directory(program, left)
        subscribers: dict[str, str] = {}
        member_ids: set[str] = set()
        values = ",".join(program.membership.class_values)
        for cov in self._search("Coverage", [("class-value", values)]):
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
        return World(program, today, directory, panels, members, patients, active, left)

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
        params = [("date", f"ge{since}"), ("class", ",".join(sorted(PRIMARY_CARE_CLASSES)))]
        for enc in self._search("Encounter", params):
            pid = ref_id(enc.get("subject"), "Patient")
            if pid not in patients or enc.get("status") in ("cancelled", "entered-in-error"):
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

    def _assignment(
        self, world: World, member: str, decision: Decision, kind: str, seq: int
    ) -> Assignment:
        program = world.program
        assert decision.pcp is not None
        now = self.clock()
        effective = effective_date(program.effective_date, world.today)
        return Assignment(
            program=program,
            patient_id=member,
            seq=seq,
            pcp=world.directory.pcps[decision.pcp],
            decision=decision,
            kind=kind,
            decided_on=world.today,
            effective_on=effective,
            change_until=change_window_end(program, world.today),
            due_on=effective + timedelta(days=program.establish_care_due_days),
            recorded=format_instant(to_micros(now)),
        )

    def _write(
        self,
        w: Writer,
        world: World,
        member: str,
        decision: Decision,
        kind: str,
        *,
        cause: str | None = None,
        replace_active: str | None = None,
    ) -> str | None:
        """Write one assignment (row + resources) in ``w``'s transaction; its source id.

        None when the member already has an active assignment (a replay or a concurrent run),
        unless ``replace_active`` names the end reason for the one being replaced.
        """
        program = world.program
        t = pccm_assignments
        w.lock(f"pccm:{program.name}:{member}")
        current = w.conn.execute(
            select(t).where(
                t.c.program == program.name, t.c.patient_id == member, t.c.status == ACTIVE
            )
        ).first()
        if current is not None:
            if replace_active is None:
                return None
            self._end(w, dict(current._mapping), replace_active, world.today)
        last = w.conn.execute(
            select(func.max(t.c.seq)).where(t.c.program == program.name, t.c.patient_id == member)
        ).scalar()
        seq = int(last or 0) + 1
        a = self._assignment(world, member, decision, kind, seq)
        w.conn.execute(
            insert(t).values(
                program=program.name,
                patient_id=member,
                seq=seq,
                pcp_id=a.pcp.id,
                practice_id=a.pcp.practice,
                rule=decision.rule or kind,
                kind=kind,
                status=ACTIVE,
                decided_on=a.decided_on.isoformat(),
                effective_on=a.effective_on.isoformat(),
                change_until=a.change_until.isoformat(),
                distance_miles=decision.distance_miles,
                outside_standard=decision.outside_standard,
                decision=orjson.dumps(decision.to_json()).decode(),
                cause=cause,
                decided_at=to_micros(self.clock()),
            )
        )
        w.conn.execute(
            pccm_unassigned.delete().where(
                pccm_unassigned.c.program == program.name, pccm_unassigned.c.patient_id == member
            )
        )
        targets = self._resources(w, a)
        sid = source_id(program.name, member, seq)
        # Fixed ids derived from the source id (and the deterministic identifiers inside): the
        # row's (program, patient, seq) key makes them new in this transaction; a replay stops
        # at the active row above and writes nothing.
        notice = w.create(
            "Communication", member_notice(a), res_id=resource_id("notice", sid)
        ).resource
        targets.append(f"Communication/{notice.res_id}")
        w.create("Provenance", provenance(a, targets), res_id=resource_id("provenance", sid))
        return sid

    def _resources(self, w: Writer, a: Assignment) -> list[str]:
        patient = orjson.loads(w.read("Patient", a.patient_id).content or b"{}")
        kept = [
            gp
            for gp in patient.get("generalPractitioner", ())
            if not ref_id(gp, "PractitionerRole") and not ref_id(gp, "Practitioner")
        ]
        patient["generalPractitioner"] = [
            {
                "reference": f"PractitionerRole/{a.pcp.id}",
                **({"display": a.pcp.name} if a.pcp.name else {}),
            },
            *kept,
        ]
        written = w.update("Patient", a.patient_id, patient).resource
        team_id = resource_id("careteam", f"{a.program.name}:{a.patient_id}")
        existing = _read_json(w, "CareTeam", team_id)
        team = w.update("CareTeam", team_id, care_team(a, existing)).resource
        sid = source_id(a.program.name, a.patient_id, a.seq)
        task = w.create("Task", establish_care_task(a), res_id=resource_id("task", sid)).resource
        return [
            f"Patient/{a.patient_id}/_history/{written.version_id}",
            f"CareTeam/{team.res_id}",
            f"Task/{task.res_id}",
        ]

    def _end(
        self, w: Writer, row: dict[str, Any], reason: str, today: date, *, vacate: bool = False
    ) -> None:
        """End an assignment; its establish-care Task, if not started, is cancelled.

        ``vacate`` (no new PCP follows): the PCP leaves Patient.generalPractitioner and the
        CareTeam participant's period ends.
        """
        t = pccm_assignments
        w.conn.execute(
            update(t)
            .where(t.c.id == row["id"])
            .values(status=ENDED, ended_on=today.isoformat(), end_reason=reason)
        )
        sid = source_id(row["program"], row["patient_id"], row["seq"])
        task_id = resource_id("task", sid)
        task = _read_json(w, "Task", task_id)
        if task is not None and task.get("status") in ("draft", "requested", "ready"):
            task["status"] = "cancelled"
            task["statusReason"] = {"text": f"PCCM assignment ended ({reason})"}
            w.update("Task", task_id, task)
        if not vacate:
            return
        ref = f"PractitionerRole/{row['pcp_id']}"
        patient = orjson.loads(w.read("Patient", row["patient_id"]).content or b"{}")
        gps = patient.get("generalPractitioner", [])
        if any(gp.get("reference") == ref for gp in gps):
            patient["generalPractitioner"] = [gp for gp in gps if gp.get("reference") != ref]
            if not patient["generalPractitioner"]:
                del patient["generalPractitioner"]
            w.update("Patient", row["patient_id"], patient)
        team_id = resource_id("careteam", f"{row['program']}:{row['patient_id']}")
        team = _read_json(w, "CareTeam", team_id)
        if team is not None:
            for part in team.get("participant", ()):
                period = part.setdefault("period", {})
                if part.get("member", {}).get("reference") == ref and not period.get("end"):
                    period["end"] = today.isoformat()
            w.update("CareTeam", team_id, team)

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
        the same PCP when re-enrolled within the gap). A dry run writes nothing.
        """
        program = self.program(program_name)
        world = self.load(program, today=today)
        if not dry_run:
            lapsed = sorted(set(world.active) - set(world.members))
            if lapsed:

                def disenrol(w: Writer) -> None:
                    for p in lapsed:
                        self._end(w, world.active[p], "disenrolled", world.today, vacate=True)

                self.store.write(disenrol)
                world = self.load(program, today=world.today)
        todo = sorted(p for p in world.members if p not in world.active)
        outcomes: list[Outcome] = []
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start : start + _CHUNK]
            decisions = []
            for pid in chunk:
                decision = decide(world.members[pid], world.directory, world.panels, program)
                if decision.pcp is not None:
                    world.panels.add(pid, world.directory.pcps[decision.pcp])
                decisions.append(decision)
            if dry_run:
                outcomes.extend(Outcome(d, False) for d in decisions)
            else:
                outcomes.extend(
                    self.store.write(partial(self._write_chunk, world=world, ds=decisions))
                )
            if progress is not None:
                progress(min(start + _CHUNK, len(todo)), len(todo))
        return Batch(outcomes, world)

    def _write_chunk(self, w: Writer, *, world: World, ds: list[Decision]) -> list[Outcome]:
        out: list[Outcome] = []
        for d in ds:
            if d.pcp is None:
                self._unassigned(w, world.program.name, d)
                out.append(Outcome(d, False))
                continue
            sid = self._write(w, world, d.member, d, "auto")
            out.append(Outcome(d, sid is not None, sid))
        return out

    def _unassigned(self, w: Writer, program: str, d: Decision) -> None:
        t = pccm_unassigned
        w.conn.execute(t.delete().where(t.c.program == program, t.c.patient_id == d.member))
        w.conn.execute(
            insert(t).values(
                program=program,
                patient_id=d.member,
                decision=orjson.dumps(d.to_json()).decode(),
                decided_at=to_micros(self.clock()),
            )
        )

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
                history = [r for r in _rows(conn, program.name) if r["patient_id"] == patient_id]
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
            sid = self._write(
                w, world, patient_id, decision, kind, cause=cause, replace_active="changed"
            )
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
                out: list[Outcome] = []
                for d in decisions:
                    if d.pcp is None:
                        self._end(w, world.active[d.member], "pcp-left", today, vacate=True)
                        self._unassigned(w, program.name, d)
                        out.append(Outcome(d, False))
                        continue
                    sid = self._write(
                        w, world, d.member, d, "reassignment", replace_active="pcp-left"
                    )
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
