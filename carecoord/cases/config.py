"""Case-management configuration: model profiles, caseload caps, intake, needs, Questionnaires.

Loaded from ``config/cases/`` (``models.yaml``, ``caseloads.yaml``, ``intake.yaml``,
``needs.yaml``, ``questionnaires/*.json``) and validated at start-up; every error names the file
and the field (``config/cases/models.yaml: models.intensive.contact_every_days: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from carecoord.transitions.codes import CareRole

__all__ = [
    "CARE_PLAN_ACTIVITY_SYSTEM",
    "CASE_MODEL_SYSTEM",
    "ActivityTemplate",
    "CaseConfig",
    "CaseConfigError",
    "CaseModel",
    "CaseloadSettings",
    "Coding",
    "GoalTemplate",
    "IntakeSettings",
    "ModelProfile",
    "NeedRule",
    "load_case_config",
]

M = TypeVar("M", bound=BaseModel)

_BASE = "https://carecoord.org/fhir"
#: EpisodeOfCare.type of a case: the case-management model.
CASE_MODEL_SYSTEM = f"{_BASE}/CodeSystem/case-model"
#: Task.code of a care-plan intervention generated from a model's template.
CARE_PLAN_ACTIVITY_SYSTEM = f"{_BASE}/CodeSystem/case-plan-activity"


class CaseConfigError(ValueError):
    """A file under config/cases is missing or invalid; the message names the file and field."""


class CaseModel(StrEnum):
    """The five case-management models (EpisodeOfCare.type, system :data:`CASE_MODEL_SYSTEM`)."""

    BROKERAGE = "brokerage"
    CLINICAL = "clinical"
    STRENGTHS_BASED = "strengths-based"
    INTENSIVE = "intensive"
    INTEGRATED = "integrated"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Coding(_Strict):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None

    def to_fhir(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


class ActivityTemplate(_Strict):
    """One intervention of a model's default care plan (a Task when planning starts)."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    display: str = Field(min_length=1)
    owner_role: CareRole
    due_days: int = Field(ge=0, le=365)
    required: bool = True


class ModelProfile(_Strict):
    """How intense a case of one model is."""

    display: str
    contact_every_days: int = Field(ge=1, le=365)
    reassess_every_days: int = Field(ge=1, le=730)
    follow_up_days: int = Field(default=30, ge=1, le=365)
    caseload_weight: float = Field(gt=0, le=100)
    eligible_roles: tuple[CareRole, ...] = Field(min_length=1)
    care_plan: tuple[ActivityTemplate, ...] = ()

    @model_validator(mode="after")
    def _unique_keys(self) -> ModelProfile:
        keys = [a.key for a in self.care_plan]
        if len(keys) != len(set(keys)):
            raise ValueError("care_plan keys must be unique")
        return self


class _ModelsFile(_Strict):
    due_soon_days: int = Field(default=3, ge=0, le=60)
    models: dict[CaseModel, ModelProfile]

    @model_validator(mode="after")
    def _all_models(self) -> _ModelsFile:
        missing = [m.value for m in CaseModel if m not in self.models]
        if missing:
            raise ValueError(f"profiles missing for {', '.join(missing)}")
        return self


class OrganizationCaseload(_Strict):
    cap: float | None = Field(default=None, gt=0)
    weights: dict[CaseModel, float] = Field(default_factory=dict)


class ManagerCaseload(_Strict):
    cap: float = Field(gt=0)


class CaseloadSettings(_Strict):
    """Caps in weighted units, per organisation and per case manager."""

    default_cap: float = Field(gt=0)
    organizations: dict[str, OrganizationCaseload] = Field(default_factory=dict)
    managers: dict[str, ManagerCaseload] = Field(default_factory=dict)


class IntakeSettings(_Strict):
    referral_codes: tuple[Coding, ...] = Field(min_length=1)
    default_model: CaseModel = CaseModel.BROKERAGE


class GoalTemplate(_Strict):
    text: str = Field(min_length=1)
    due_days: int = Field(ge=1, le=730)


class NeedRule(_Strict):
    """Answers of one Questionnaire that show a need, and the problem and goal proposed."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    questionnaire: str
    kind: Literal["any_of", "sum_at_least", "per_item"]
    items: tuple[str, ...] = Field(min_length=1)
    answers: tuple[str, ...] = ()
    scores: dict[str, int] = Field(default_factory=dict)
    threshold: int | None = None
    sdoh: bool = False
    category: Coding | None = None
    condition: Coding | None = None
    goal: GoalTemplate

    @model_validator(mode="after")
    def _kind_fields(self) -> NeedRule:
        if self.kind == "sum_at_least":
            if not self.scores or self.threshold is None:
                raise ValueError("sum_at_least needs scores and threshold")
        elif not self.answers:
            raise ValueError(f"{self.kind} needs answers")
        return self


class _NeedsFile(_Strict):
    rules: tuple[NeedRule, ...]


@dataclass(frozen=True)
class CaseConfig:
    """Everything case management is configured with."""

    models: dict[CaseModel, ModelProfile]
    caseloads: CaseloadSettings
    intake: IntakeSettings
    needs: tuple[NeedRule, ...]
    questionnaires: dict[str, dict[str, Any]]  # by canonical url
    due_soon_days: int = 3
    #: linkId -> (item text, group text) per Questionnaire url.
    item_texts: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)

    def weight(self, model: CaseModel, organization: str | None = None) -> float:
        org = self.caseloads.organizations.get(organization or "")
        if org is not None and model in org.weights:
            return org.weights[model]
        return self.models[model].caseload_weight

    def cap(self, manager: str, organization: str | None = None) -> float:
        personal = self.caseloads.managers.get(manager)
        if personal is not None:
            return personal.cap
        org = self.caseloads.organizations.get(organization or "")
        if org is not None and org.cap is not None:
            return org.cap
        return self.caseloads.default_cap

    def questionnaire(self, ref: str) -> dict[str, Any] | None:
        """The Questionnaire by canonical url (``|version`` ignored) or by ``Questionnaire/id``."""
        url = ref.split("|", 1)[0]
        if url in self.questionnaires:
            return self.questionnaires[url]
        for body in self.questionnaires.values():
            if url in (f"Questionnaire/{body.get('id')}", body.get("id")):
                return body
        return None


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{_location(err['loc'])}: {err['msg']}" for err in exc.errors())


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CaseConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise CaseConfigError(f"{path}: not valid YAML: {exc}") from exc


def _parse(path: Path, model: type[M]) -> M:
    try:
        return model.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise CaseConfigError(f"{path}: {_problems(exc)}") from exc


def _walk_items(
    items: list[dict[str, Any]], group: str, out: dict[str, tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        link = str(item.get("linkId"))
        out[link] = (str(item.get("text", link)), group)
        found[link] = item
        found.update(_walk_items(item.get("item") or [], str(item.get("text", link)), out))
    return found


def _load_questionnaires(
    folder: Path,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    from fhir.resources.R4B.questionnaire import Questionnaire  # the edge: validate once

    bodies: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[str, dict[str, Any]]] = {}
    texts: dict[str, dict[str, tuple[str, str]]] = {}
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise CaseConfigError(f"{folder}: no Questionnaire (*.json) found")
    for path in files:
        try:
            body = orjson.loads(path.read_bytes())
            Questionnaire.model_validate(body)
        except orjson.JSONDecodeError as exc:
            raise CaseConfigError(f"{path}: not valid JSON: {exc}") from exc
        except ValidationError as exc:
            raise CaseConfigError(f"{path}: {_problems(exc)}") from exc
        url = body.get("url")
        if not url:
            raise CaseConfigError(f"{path}: url: a Questionnaire needs a canonical url")
        if url in bodies:
            raise CaseConfigError(f"{path}: url: {url} is used by another Questionnaire")
        bodies[url] = body
        texts[url] = {}
        items[url] = _walk_items(body.get("item") or [], "", texts[url])
    return bodies, items, texts


def _check_rules(
    path: Path, rules: tuple[NeedRule, ...], items: dict[str, dict[str, dict[str, Any]]]
) -> None:
    keys: set[str] = set()
    for i, rule in enumerate(rules):
        where = f"{path}: rules[{i}]"
        if rule.key in keys:
            raise CaseConfigError(f"{where}.key: {rule.key} is used twice")
        keys.add(rule.key)
        known = items.get(rule.questionnaire)
        if known is None:
            raise CaseConfigError(f"{where}.questionnaire: no Questionnaire {rule.questionnaire}")
        codes: set[str] = set()
        for j, link in enumerate(rule.items):
            item = known.get(link)
            if item is None:
                raise CaseConfigError(f"{where}.items[{j}]: no item {link!r} in the Questionnaire")
            for option in item.get("answerOption") or []:
                coding = option.get("valueCoding") or {}
                codes.add(str(coding.get("code")))
        for j, code in enumerate(rule.answers):
            if code not in codes:
                raise CaseConfigError(f"{where}.answers[{j}]: {code!r} is not an answer option")
        for code in rule.scores:
            if code not in codes:
                raise CaseConfigError(f"{where}.scores.{code}: not an answer option")
        if rule.condition is None and rule.kind != "per_item":
            raise CaseConfigError(f"{where}.condition: required unless kind is per_item")


def load_case_config(folder: Path) -> CaseConfig:
    """Load and validate ``folder`` (normally ``config/cases``)."""
    models = _parse(folder / "models.yaml", _ModelsFile)
    caseloads = _parse(folder / "caseloads.yaml", CaseloadSettings)
    intake = _parse(folder / "intake.yaml", IntakeSettings)
    needs = _parse(folder / "needs.yaml", _NeedsFile)
    bodies, items, texts = _load_questionnaires(folder / "questionnaires")
    _check_rules(folder / "needs.yaml", needs.rules, items)
    return CaseConfig(
        models=dict(models.models),
        caseloads=caseloads,
        intake=intake,
        needs=needs.rules,
        questionnaires=bodies,
        due_soon_days=models.due_soon_days,
        item_texts=texts,
    )
