"""Epic: SMART on FHIR quirks of Epic's authorization server (open.epic.com)."""

from integrations.epic.profile import EpicProfile

__all__ = ["EpicProfile"]
