"""Case management from intake to closure: five models, assessments, plans, caseloads, outcomes.

Modules: ``phases`` (the lifecycle state machine), ``config`` (config/cases), ``intake``,
``assessment`` (scoring to proposed needs), ``monitoring``, ``caseload``, ``outcomes`` (pure rules);
``resources`` (FHIR shapes), ``service`` (units of work), ``reports`` (read side), ``hook`` (phase
guard on plain FHIR writes), ``routes``, ``handlers``, ``cli``.

Errors::

    CaseConfigError (ValueError)   a file under config/cases is invalid (names file and field)
    MoveRefused (ValueError)       a phase move the rules refuse -> BusinessRule (422)
    CapExceeded (ValueError)       over cap without an override reason -> BusinessRule (422)
    NoEligibleManager (ValueError) nobody holds an eligible role -> BusinessRule (422)

Services raise :mod:`carecoord.fhir.errors` (InvalidRequest 400, NotFound 404, BusinessRule 422).
"""

from carecoord.cases.caseload import CapExceeded, NoEligibleManager
from carecoord.cases.config import CaseConfig, CaseConfigError, CaseModel, load_case_config
from carecoord.cases.hook import case_phase_guard
from carecoord.cases.phases import MoveFacts, MoveRefused, Phase, check_move

__all__ = [
    "CapExceeded",
    "CaseConfig",
    "CaseConfigError",
    "CaseModel",
    "MoveFacts",
    "MoveRefused",
    "NoEligibleManager",
    "Phase",
    "case_phase_guard",
    "check_move",
    "load_case_config",
]
