"""What else runs at a discharge or an admission: readmission risk and readmission detection.

The LACE and HOSPITAL scores of a discharge (written as RiskAssessments) give the risk band that
chooses the checklist's follow-up plan and TCM complexity; an inpatient admission within 30 days
of an index discharge is recorded as a readmission with a review Task. Both are configured under
config/risk/ and run in the transaction of the Encounter job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from carecoord.fhir.store import Writer
from carecoord.transitions.readmissions.service import detect_on_admission
from carecoord.transitions.risk.config import RiskConfig, load_risk_config
from carecoord.transitions.risk.service import assess_discharge

__all__ = ["Extensions", "load_extensions"]


@dataclass
class Extensions:
    """Risk scoring at discharge and readmission detection at admission."""

    risk: RiskConfig

    def risk_band(self, w: Writer, encounter_id: str, now: datetime) -> str | None:
        """Score the discharge (writing its RiskAssessments) and return the combined band."""
        return str(assess_discharge(w, encounter_id=encounter_id, now=now, config=self.risk).band)

    def on_admission(self, w: Writer, encounter_id: str, now: datetime) -> None:
        """Record a 30-day readmission (and its review Task) when this admission is one."""
        detect_on_admission(w, encounter_id=encounter_id, now=now, config=self.risk.readmissions)


def load_extensions(config_dir: Path) -> Extensions:
    """The risk and readmission settings under ``config_dir`` (validated: errors name the file)."""
    return Extensions(risk=load_risk_config(config_dir))
