"""The batch report: assignments per rule, unassigned and why, panel use, outside the standard."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from carecoord.pccm.model import Decision, Panels
from carecoord.pccm.program import Program
from carecoord.pccm.ranking import Directory

__all__ = ["batch_report", "write_report"]


def batch_report(
    program: Program,
    decisions: Iterable[Decision],
    directory: Directory,
    panels: Panels,
    *,
    dry_run: bool,
    written: int,
) -> dict[str, Any]:
    """The report of one batch run (panels as they stand after it)."""
    decisions = list(decisions)
    per_rule = Counter(d.rule for d in decisions if d.pcp is not None)
    cap = program.caps.per_pcp
    pcps = [
        {
            "pcp": f"PractitionerRole/{p.id}",
            "name": p.name,
            "practice": f"Organization/{p.practice}" if p.practice else None,
            "panel": panels.load.get(p.id, 0),
            "cap": cap,
            "utilisation": round(panels.load.get(p.id, 0) / cap, 4),
        }
        for p in directory.pcps.values()
    ]
    practice_cap = program.caps.per_practice
    practices = [
        {
            "practice": f"Organization/{org}",
            "panel": load,
            "cap": practice_cap,
            "utilisation": round(load / practice_cap, 4) if practice_cap else None,
        }
        for org, load in sorted(panels.practice_load.items())
        if org in {p.practice for p in directory.pcps.values()}
    ]
    return {
        "program": program.name,
        "dryRun": dry_run,
        "members": len(decisions),
        "assigned": sum(per_rule.values()),
        "written": written,
        "perRule": {rule.value: per_rule.get(rule.value, 0) for rule in program.rules}
        | {r: n for r, n in per_rule.items() if r and r not in {k.value for k in program.rules}},
        "unassigned": [
            {"member": f"Patient/{d.member}", "reason": d.reason}
            for d in decisions
            if d.pcp is None
        ],
        "outsideStandard": [
            {
                "member": f"Patient/{d.member}",
                "pcp": f"PractitionerRole/{d.pcp}",
                "distanceMiles": round(d.distance_miles or 0.0, 2),
                "standardMiles": program.distance_miles,
            }
            for d in decisions
            if d.outside_standard
        ],
        "panels": pcps,
        "practices": practices,
    }


def _csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_report(report: dict[str, Any], folder: Path) -> list[Path]:
    """``report.json`` and CSV files (per rule, unassigned, panels, practices, outside)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "report.json"]
    paths[0].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    tables: list[tuple[str, list[dict[str, Any]], list[str]]] = [
        (
            "per-rule.csv",
            [{"rule": r, "assigned": n} for r, n in report["perRule"].items()],
            ["rule", "assigned"],
        ),
        ("unassigned.csv", report["unassigned"], ["member", "reason"]),
        (
            "panels.csv",
            report["panels"],
            ["pcp", "name", "practice", "panel", "cap", "utilisation"],
        ),
        ("practices.csv", report["practices"], ["practice", "panel", "cap", "utilisation"]),
        (
            "outside-standard.csv",
            report["outsideStandard"],
            ["member", "pcp", "distanceMiles", "standardMiles"],
        ),
    ]
    for name, rows, fields in tables:
        _csv(folder / name, rows, fields)
        paths.append(folder / name)
    return paths
