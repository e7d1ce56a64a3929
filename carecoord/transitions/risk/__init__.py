"""Readmission risk at discharge: LACE and HOSPITAL scores written as RiskAssessments.

Errors::

    RiskConfigError (ValueError)   a config/risk file is invalid (names the file and field)
    carecoord.fhir.errors.BusinessRule   the encounter to assess is deleted or has no patient
"""

from carecoord.transitions.risk.config import (
    RiskConfig,
    RiskConfigError,
    load_risk_config,
)
from carecoord.transitions.risk.scores import (
    Band,
    Component,
    HospitalInputs,
    LaceInputs,
    ScoreResult,
    combine_bands,
    score_hospital,
    score_lace,
)
from carecoord.transitions.risk.service import DischargeRisk, assess_discharge

__all__ = [
    "Band",
    "Component",
    "DischargeRisk",
    "HospitalInputs",
    "LaceInputs",
    "RiskConfig",
    "RiskConfigError",
    "ScoreResult",
    "assess_discharge",
    "combine_bands",
    "load_risk_config",
    "score_hospital",
    "score_lace",
]
