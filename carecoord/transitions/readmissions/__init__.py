"""30-day readmission detection: index stays, transfer chains, planned rules, review Tasks.

Errors::

    RiskConfigError (ValueError)   config/risk/readmissions.yaml or its planned rules are invalid
"""

from carecoord.transitions.readmissions.config import (
    ReadmissionConfig,
    RiskConfigError,
    load_readmission_config,
)
from carecoord.transitions.readmissions.service import Readmission, detect_on_admission
from carecoord.transitions.readmissions.stays import (
    ReadmissionFinding,
    Stay,
    chain_stays,
    find_readmissions,
)

__all__ = [
    "Readmission",
    "ReadmissionConfig",
    "ReadmissionFinding",
    "RiskConfigError",
    "Stay",
    "chain_stays",
    "detect_on_admission",
    "find_readmissions",
    "load_readmission_config",
]
