"""Medicaid PCCM: primary-care-provider assignment.

Layers: :mod:`program` (config/pccm/*.yaml), :mod:`model` and :mod:`rules` (plain values and hard
constraints), :mod:`ranking` (the ordered criteria over an indexed directory), :mod:`directory`
(FHIR resources -> values), :mod:`resources` (the FHIR outputs), :mod:`service` (load, decide,
write in one transaction), :mod:`report` (batch report), and the edges ``routes``, ``cli``,
``handlers``.

Errors: configuration problems raise :class:`carecoord.settings.ConfigError` naming the file and
field; services raise :mod:`carecoord.fhir.errors` classes (``NotFound`` for an unknown program,
``BusinessRule`` when a rule forbids a choice or change).
"""

from carecoord.pccm.model import Accepting, Candidate, Decision, Member, Panels, Pcp, RuleNote
from carecoord.pccm.program import Program, RuleKind, load_programs
from carecoord.pccm.ranking import Directory, decide, decide_choice

__all__ = [
    "Accepting",
    "Candidate",
    "Decision",
    "Directory",
    "Member",
    "Panels",
    "Pcp",
    "Program",
    "RuleKind",
    "RuleNote",
    "decide",
    "decide_choice",
    "load_programs",
]
