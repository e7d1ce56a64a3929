"""Builders of PCCM domain values and programs for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carecoord.pccm.model import Accepting, Member, Pcp
from carecoord.pccm.program import Program, load_program_file

CONFIG = Path(__file__).resolve().parents[2] / "config" / "pccm"

#: Raleigh, NC and points east of it (1 degree of longitude there is about 56 miles).
HOME = (35.78, -78.64)


def east(miles: float) -> tuple[float, float]:
    return HOME[0], HOME[1] + miles / 56.11


def default_program(**changes: Any) -> Program:
    program = load_program_file(CONFIG / "default.yaml")
    return program.model_copy(update=changes) if changes else program


def second_program() -> Program:
    return load_program_file(CONFIG / "language-first.yaml")


def pcp(
    pid: str,
    *,
    miles: float | None = 5.0,
    pcp_type: str = "general",
    accepting: Accepting = Accepting.NEW,
    min_age: int = 0,
    max_age: int = 130,
    sexes: tuple[str, ...] = ("male", "female", "other", "unknown"),
    practice: str | None = None,
    languages: tuple[str, ...] = (),
) -> Pcp:
    return Pcp(
        id=pid,
        pcp_type=pcp_type,
        min_age=min_age,
        max_age=max_age,
        sexes=frozenset(sexes),
        accepting=accepting,
        practice=practice,
        practitioner=f"prac-{pid}",
        location=None if miles is None else east(miles),
        languages=frozenset(languages),
        name=f"Dr {pid}",
    )


def member(mid: str = "m1", **kw: Any) -> Member:
    defaults: dict[str, Any] = {"age": 40, "sex": "female", "location": HOME}
    defaults.update(kw)
    return Member(id=mid, **defaults)
