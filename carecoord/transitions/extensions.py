"""What else runs at a discharge or an admission: readmission risk and readmission detection.

The risk score of a discharge chooses the follow-up plan of its checklist; an admission within
30 days of an index discharge opens a readmission review. Both are configured under config/risk/.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from carecoord.fhir.store import Writer
from carecoord.transitions.service import RiskHook

__all__ = ["Extensions", "load_extensions"]


@dataclass
class Extensions:
    """Risk scoring at discharge and readmission detection at admission (either may be off)."""

    risk_band: RiskHook | None = None

    def on_admission(self, w: Writer, encounter_id: str, now: datetime) -> None:
        """Look for the index discharge this admission readmits (nothing when not configured)."""


def load_extensions(config_dir: Path) -> Extensions:
    """The extensions configured under ``config_dir``."""
    return Extensions()
