"""The program dashboard's data: readmissions, TCM contact and visit compliance, checklist
completion and caseloads, with the table behind every chart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from carecoord.transitions.codes import (
    CAREPLAN_CATEGORY_SYSTEM,
    TRANSITION_OF_CARE,
    TaskCode,
)
from carecoord.web.people import names_of
from carecoord.web.program import (
    CaseloadRow,
    ChecklistRow,
    ComplianceRow,
    ReadmissionRow,
    caseloads,
    checklist_completion,
    deadline_compliance,
    readmissions_by_month,
)
from carecoord.web.reads import ScreenReader

__all__ = ["TABLES", "DashboardData", "charts", "load", "table", "with_apis"]

TABLES = ("readmissions", "tcm-contact", "tcm-visit", "checklists", "caseloads")


@dataclass(frozen=True)
class DashboardData:
    readmissions: list[ReadmissionRow]
    contact: list[ComplianceRow]
    visit: list[ComplianceRow]
    checklists: list[ChecklistRow]
    caseloads: list[CaseloadRow]
    denied: tuple[str, ...]
    #: Where the numbers come from: the feature APIs, or computed here from FHIR resources.
    sources: tuple[str, ...] = ()


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def with_apis(
    data: DashboardData,
    *,
    metrics: Any,
    caseload: Any,
    names: Mapping[str, str],
) -> DashboardData:
    """The numbers of ``GET /api/metrics/transitions?by=period`` (CMS readmission rules, TCM
    windows) and ``GET /api/caseloads`` (weighted loads and caps) in place of the local ones."""
    fields: dict[str, Any] = {}
    sources: list[str] = []
    groups = metrics.get("groups") if isinstance(metrics, Mapping) else None
    if isinstance(groups, list):
        months = [g for g in groups if isinstance(g, Mapping) and g.get("period")]
        fields["readmissions"] = [
            ReadmissionRow(
                str(g["period"]), _int(g.get("discharges")), _int(g.get("readmissions_30d"))
            )
            for g in months
        ]
        fields["contact"] = [
            ComplianceRow(str(g["period"]), _int(g.get("discharges")), _int(g.get("contact_2bd")))
            for g in months
        ]
        fields["visit"] = [
            ComplianceRow(str(g["period"]), _int(g.get("discharges")), _int(g.get("visit_14d")))
            for g in months
        ]
        fields["checklists"] = [
            ChecklistRow(
                str(g["period"]),
                _int(g.get("checklists")),
                _int(g.get("tasks")),
                _int(g.get("tasks_completed")),
            )
            for g in months
        ]
        sources.append("transition metrics API")
    rows = caseload.get("caseloads") if isinstance(caseload, Mapping) else None
    if isinstance(rows, list):
        fields["caseloads"] = [
            CaseloadRow(
                str(r.get("careManager")),
                names.get(str(r.get("careManager")), str(r.get("careManager"))),
                float(r.get("load") or 0),
                float(r["cap"]) if isinstance(r.get("cap"), int | float) else None,
            )
            for r in rows
            if isinstance(r, Mapping)
        ]
        sources.append("caseloads API")
    return replace(data, **fields, sources=tuple(sources))


def load(
    reader: ScreenReader,
    *,
    now: datetime,
    tz: ZoneInfo,
    caps: Mapping[str, int],
    transitions: bool = True,
    cases: bool = True,
) -> DashboardData:
    """Read what the numbers are made of (all the rows the caller's policy lets them see);
    ``transitions``/``cases`` false: leave those numbers to the feature APIs."""
    readmissions: list[ReadmissionRow] = []
    contact: list[ComplianceRow] = []
    visit: list[ComplianceRow] = []
    checklists: list[ChecklistRow] = []
    loads: list[CaseloadRow] = []
    if transitions:
        encounters = reader.search("Encounter", [("class", "IMP,ACUTE,NONAC")], limit=50000)
        plans = reader.search(
            "CarePlan",
            [("category", f"{CAREPLAN_CATEGORY_SYSTEM}|{TRANSITION_OF_CARE}")],
            limit=20000,
        )
        tasks = reader.search("Task", [], limit=100000)
        readmissions = readmissions_by_month(encounters, tz=tz)
        contact = deadline_compliance(tasks, TaskCode.TCM_INTERACTIVE_CONTACT, now=now, tz=tz)
        visit = deadline_compliance(tasks, TaskCode.TCM_FACE_TO_FACE_VISIT, now=now, tz=tz)
        checklists = checklist_completion(plans, tasks, tz=tz)
    if cases:
        episodes = reader.search(
            "EpisodeOfCare", [("status", "active,waitlist,onhold")], limit=20000
        )
        managers = {
            str(e.get("careManager", {}).get("reference"))
            for e in episodes
            if isinstance(e.get("careManager"), dict)
        }
        loads = caseloads(episodes, caps=caps, names=names_of(reader, managers))
    return DashboardData(
        readmissions=readmissions,
        contact=contact,
        visit=visit,
        checklists=checklists,
        caseloads=loads,
        denied=tuple(sorted(reader.denied)),
    )


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def table(data: DashboardData, name: str) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the table behind chart ``name`` (one of :data:`TABLES`)."""
    if name == "readmissions":
        return ["month", "discharges", "readmissions_30d", "rate_pct"], [
            [r.month, r.discharges, r.readmissions, _pct(r.rate)] for r in data.readmissions
        ]
    if name in ("tcm-contact", "tcm-visit"):
        rows = data.contact if name == "tcm-contact" else data.visit
        return ["month", "due", "met", "rate_pct"], [
            [r.month, r.due, r.met, _pct(r.rate)] for r in rows
        ]
    if name == "checklists":
        return ["month", "checklists", "items", "completed", "rate_pct"], [
            [r.month, r.checklists, r.items, r.completed, _pct(r.rate)] for r in data.checklists
        ]
    if name == "caseloads":
        return ["care_manager", "load", "cap"], [
            [r.name, f"{r.active:g}", "" if r.cap is None else f"{r.cap:g}"] for r in data.caseloads
        ]
    raise KeyError(name)


def charts(
    data: DashboardData,
    *,
    bar: Callable[..., str],
    line: Callable[..., str],
    hbar: Callable[..., str] | None = None,
) -> dict[str, str]:
    """SVG markup of each chart."""
    return {
        "readmissions": line(
            "30-day readmission rate by discharge month",
            [r.month for r in data.readmissions],
            [r.rate for r in data.readmissions],
        ),
        "tcm-contact": line(
            "TCM interactive contact within 2 business days",
            [r.month for r in data.contact],
            [r.rate for r in data.contact],
        ),
        "tcm-visit": line(
            "TCM face-to-face visit in time",
            [r.month for r in data.visit],
            [r.rate for r in data.visit],
        ),
        "checklists": bar(
            "Checklist items completed by discharge month",
            [r.month for r in data.checklists],
            [r.rate or 0.0 for r in data.checklists],
            unit="%",
            top=100.0,
        ),
        "caseloads": (hbar or bar)(
            "Caseload per care manager against the cap",
            [r.name for r in data.caseloads],
            [r.active for r in data.caseloads],
            caps=[r.cap for r in data.caseloads],
        ),
    }
