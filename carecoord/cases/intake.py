"""Referral screening: is a ServiceRequest eligible to open a case, and with which model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carecoord.cases.config import CASE_MODEL_SYSTEM, CaseModel, IntakeSettings

__all__ = ["referral_model", "screen_referral"]


def _codings(concept: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list((concept or {}).get("coding") or [])


def screen_referral(
    referral: Mapping[str, Any],
    patient: Mapping[str, Any] | None,
    *,
    open_cases: int,
    intake: IntakeSettings,
) -> list[str]:
    """Why the referral cannot open a case (empty: eligible). Reasons carry no patient data."""
    reasons: list[str] = []
    if referral.get("status") != "active":
        reasons.append(f"the referral is {referral.get('status')}, not active")
    if referral.get("intent") not in ("order", "original-order", "plan", "proposal"):
        reasons.append("the referral's intent is not an order, plan or proposal")
    accepted = {(c.system, c.code) for c in intake.referral_codes}
    if not any(
        (c.get("system"), c.get("code")) in accepted for c in _codings(referral.get("code"))
    ):
        reasons.append("the referral is not for case management (ServiceRequest.code)")
    if patient is None:
        reasons.append("the referral's subject is not a known Patient")
    else:
        if patient.get("deceasedBoolean") is True or patient.get("deceasedDateTime"):
            reasons.append("the client has died")
        if patient.get("active") is False:
            reasons.append("the client's record is inactive")
    if open_cases:
        reasons.append("the client already has an open case")
    return reasons


def referral_model(referral: Mapping[str, Any], default: CaseModel) -> CaseModel:
    """The model asked for in ServiceRequest.orderDetail (case-model system), else ``default``."""
    for concept in referral.get("orderDetail") or []:
        for coding in _codings(concept):
            if coding.get("system") == CASE_MODEL_SYSTEM:
                try:
                    return CaseModel(str(coding.get("code")))
                except ValueError:
                    continue
    return default
