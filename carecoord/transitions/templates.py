"""Checklist templates: YAML under ``config/transitions/``, validated and compiled at start-up.

``default.yaml`` holds the organisation defaults (time zone, language, holiday calendar), the risk
settings, named escalation profiles, the item library, the follow-up plans per risk band and the
variants (tried in order; the first whose ``match`` fits the discharge is used).
``organizations/<org-id>.yaml`` overlays one organisation: its own time zone, language and
holidays; ``items`` that override a library item by key (the fields given replace the default's)
or add a new one (to the ``variants`` it names, else to every variant); ``switch_off`` keys;
replacement ``follow_up_plans``, ``risk`` settings and ``escalation_profiles``. Files ending in
``.example`` are ignored. See config/transitions/README.md.

Errors::

    ValueError
      └── TemplateError   a file or field is wrong; the message names the file and the field
                          (also a carecoord.settings.ConfigError, so start-up reports it the same)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from carecoord.settings import ConfigError, feature_config_dir
from carecoord.transitions.calendar import BusinessCalendar
from carecoord.transitions.codes import CareRole, TaskCode, task_display
from carecoord.transitions.dispositions import Destination
from carecoord.transitions.tcm import Complexity

__all__ = [
    "DEFAULT_FILE",
    "ORGANIZATIONS_DIR",
    "TRANSITIONS_DIR",
    "Conditions",
    "DueRule",
    "EscalationStep",
    "ItemTemplate",
    "OrganizationSetup",
    "Priority",
    "RiskBand",
    "Template",
    "TemplateError",
    "TemplateSet",
    "Variant",
    "load_templates",
]

TRANSITIONS_DIR = "transitions"
DEFAULT_FILE = "default.yaml"
ORGANIZATIONS_DIR = "organizations"

Priority: TypeAlias = Literal["routine", "urgent", "asap", "stat"]
RiskBand: TypeAlias = Literal["low", "moderate", "high"]
PlanBand: TypeAlias = Literal["low", "moderate", "high", "none"]
Unit: TypeAlias = Literal["business_days", "calendar_days", "hours"]
TcmDeadline: TypeAlias = Literal["contact", "visit", "visit-7", "visit-14", "period-end"]
Notify: TypeAlias = CareRole | Literal["owner"]
_KEY = r"^[a-z0-9][a-z0-9-]{0,62}$"
_UNITS: tuple[Unit, ...] = ("business_days", "calendar_days", "hours")


class TemplateError(ConfigError, ValueError):
    """A template or overlay file is invalid; the message names the file and the field."""


# -- compiled, immutable shapes the checklist builder reads ---------------------------------------


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """Who is told when: ``offset`` before the due time (due-soon) or after it (overdue)."""

    name: str
    when: Literal["due-soon", "overdue"]
    offset: timedelta
    notify: tuple[Notify, ...]


@dataclass(frozen=True, slots=True)
class DueRule:
    """When an item is due: ``amount`` ``unit`` after the discharge (``anchor`` "discharge"),
    a TCM deadline (``anchor`` "tcm", ``ref`` its name) or another item's due time (``anchor``
    "item", ``ref`` its key); never later than the items in ``no_later_than``; ``opens_hours``
    after discharge the item may start (e.g. a call at 48-72 h)."""

    anchor: Literal["discharge", "tcm", "item"]
    ref: str | None = None
    unit: Unit | None = None
    amount: int = 0
    no_later_than: tuple[str, ...] = ()
    opens_hours: int | None = None


@dataclass(frozen=True, slots=True)
class Conditions:
    """All must hold for the item to be in a checklist (``None``: no condition)."""

    language_differs: bool | None = None
    equipment_ordered: bool | None = None
    pending_results: bool | None = None
    home_health: bool | None = None
    tcm_eligible: bool | None = None
    risk_band: frozenset[str] | None = None  # "low" | "moderate" | "high" | "none"
    destination: frozenset[Destination] | None = None
    encounter_class: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class ItemTemplate:
    key: str
    code: TaskCode
    title: str
    owner: CareRole
    due: DueRule
    priority: Priority
    required: bool
    when: Conditions
    escalation: tuple[EscalationStep, ...]


@dataclass(frozen=True, slots=True)
class VariantMatch:
    """One alternative of a variant's ``match`` (all given fields must hold)."""

    encounter_class: frozenset[str] | None = None
    destination: frozenset[Destination] | None = None
    home_health: bool | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    match: tuple[VariantMatch, ...]  # any of; empty: always
    items: tuple[str, ...]
    follow_up_plan: bool


@dataclass(frozen=True, slots=True)
class Template:
    """An organisation's effective template (default plus its overlay)."""

    items: Mapping[str, ItemTemplate]
    variants: tuple[Variant, ...]
    follow_up_plans: Mapping[str, tuple[str, ...]]  # band or "none" -> item keys
    complexity_by_band: Mapping[str, Complexity]
    no_band_complexity: Complexity
    switched_off: frozenset[str]
    order: tuple[str, ...]  # every key, each after the items its due rule refers to


@dataclass(frozen=True, slots=True)
class OrganizationSetup:
    """What a checklist needs to know about an organisation."""

    organization: str | None
    calendar: BusinessCalendar
    language: str
    timezone: str
    template: Template


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """The default setup and one per organisation overlay."""

    default: OrganizationSetup
    organizations: Mapping[str, OrganizationSetup]

    def for_organization(self, org_id: str | None) -> OrganizationSetup:
        """The organisation's setup; the default one for ``None`` or an organisation without an
        overlay."""
        if org_id is None:
            return self.default
        return self.organizations.get(org_id, self.default)


# -- file models ----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _tuple(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


class HolidaysModel(_Model):
    calendar: Literal["us-federal"] = "us-federal"
    subdivision: str | None = None
    closures: tuple[date, ...] = ()
    removed: tuple[date, ...] = ()


class OrganizationModel(_Model):
    timezone: str = "America/New_York"
    language: str = Field(default="en", pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
    holidays: HolidaysModel = HolidaysModel()


_DEFAULT_COMPLEXITY: dict[RiskBand, Complexity] = {
    "high": Complexity.HIGH,
    "moderate": Complexity.MODERATE,
    "low": Complexity.MODERATE,
}


class RiskModel(_Model):
    complexity: dict[RiskBand, Complexity] = Field(
        default_factory=lambda: dict(_DEFAULT_COMPLEXITY)
    )
    no_band_complexity: Complexity = Complexity.MODERATE


def _notify_target(value: str) -> str:
    if value != "owner" and value not in _ROLES:
        raise ValueError(f"must be 'owner' or a care role ({', '.join(sorted(_ROLES))})")
    return value


_ROLES = frozenset(r.value for r in CareRole)


def _not_empty(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("name at least one: 'owner' or a care role")
    return value


class StepModel(_Model):
    name: str = Field(pattern=_KEY)
    when: Literal["due-soon", "overdue"]
    hours: float = Field(default=0, ge=0, le=24 * 90)
    notify: Annotated[
        tuple[Annotated[str, AfterValidator(_notify_target)], ...], AfterValidator(_not_empty)
    ]

    _notify = field_validator("notify", mode="before")(_tuple)


class DueModel(_Model):
    business_days: int | None = Field(default=None, ge=0, le=366)
    calendar_days: int | None = Field(default=None, ge=0, le=366)
    hours: int | None = Field(default=None, ge=0, le=24 * 366)
    tcm: TcmDeadline | None = None
    after: str | None = Field(default=None, pattern=_KEY)
    no_later_than: tuple[str, ...] = ()
    opens_hours: int | None = Field(default=None, ge=0, le=24 * 366)

    _nlt = field_validator("no_later_than", mode="before")(_tuple)

    @model_validator(mode="after")
    def _one_anchor(self) -> DueModel:
        units = [u for u in _UNITS if getattr(self, u) is not None]
        if len(units) > 1:
            raise ValueError(f"give at most one of {', '.join(_UNITS)} (got {', '.join(units)})")
        if self.tcm is not None and (units or self.after is not None):
            raise ValueError("tcm is a deadline of its own: no offset and no after with it")
        if self.tcm is None and self.after is None and not units:
            raise ValueError(
                "give one of business_days, calendar_days, hours (after discharge), tcm, or after"
            )
        return self

    def rule(self) -> DueRule:
        unit = next((u for u in _UNITS if getattr(self, u) is not None), None)
        amount = int(getattr(self, unit)) if unit else 0
        if self.tcm is not None:
            anchor: Literal["discharge", "tcm", "item"] = "tcm"
            ref: str | None = self.tcm
        elif self.after is not None:
            anchor, ref = "item", self.after
        else:
            anchor, ref = "discharge", None
        return DueRule(anchor, ref, unit, amount, self.no_later_than, self.opens_hours)


class WhenModel(_Model):
    language_differs: bool | None = None
    equipment_ordered: bool | None = None
    pending_results: bool | None = None
    home_health: bool | None = None
    tcm_eligible: bool | None = None
    risk_band: tuple[PlanBand, ...] | None = None
    destination: tuple[Destination, ...] | None = None
    encounter_class: tuple[str, ...] | None = None

    _lists = field_validator("risk_band", "destination", "encounter_class", mode="before")(_tuple)

    def conditions(self) -> Conditions:
        return Conditions(
            language_differs=self.language_differs,
            equipment_ordered=self.equipment_ordered,
            pending_results=self.pending_results,
            home_health=self.home_health,
            tcm_eligible=self.tcm_eligible,
            risk_band=None if self.risk_band is None else frozenset(self.risk_band),
            destination=None if self.destination is None else frozenset(self.destination),
            encounter_class=None
            if self.encounter_class is None
            else frozenset(c.upper() for c in self.encounter_class),
        )


def _check_step_names(steps: tuple[StepModel, ...]) -> tuple[StepModel, ...]:
    names = [s.name for s in steps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"escalation step names must be unique (repeated: {', '.join(dupes)})")
    return steps


Steps: TypeAlias = Annotated[tuple[StepModel, ...], AfterValidator(_check_step_names)]


def _escalation_kind(value: Any) -> str:
    return "escalation-profile" if isinstance(value, str) else "escalation-steps"


Escalation: TypeAlias = (
    Annotated[
        Annotated[str, Tag("escalation-profile")] | Annotated[Steps, Tag("escalation-steps")],
        Discriminator(_escalation_kind),
    ]
    | None
)


class ItemModel(_Model):
    key: str = Field(pattern=_KEY)
    code: TaskCode
    title: str | None = Field(default=None, min_length=1, max_length=200)
    owner: CareRole
    due: DueModel
    priority: Priority = "routine"
    required: bool = True
    when: WhenModel = WhenModel()
    escalation: Escalation = None


class ItemOverlayModel(_Model):
    """An overlay item: overrides the default item with the same key, or adds a new one."""

    key: str = Field(pattern=_KEY)
    code: TaskCode | None = None
    title: str | None = Field(default=None, min_length=1, max_length=200)
    owner: CareRole | None = None
    due: DueModel | None = None
    priority: Priority | None = None
    required: bool | None = None
    when: WhenModel | None = None
    escalation: Escalation = None
    variants: tuple[str, ...] | None = None

    _variants = field_validator("variants", mode="before")(_tuple)


class MatchModel(_Model):
    encounter_class: tuple[str, ...] | None = None
    destination: tuple[Destination, ...] | None = None
    home_health: bool | None = None

    _lists = field_validator("encounter_class", "destination", mode="before")(_tuple)


class VariantModel(_Model):
    name: str = Field(pattern=_KEY)
    description: str = ""
    match: tuple[MatchModel, ...] = ()
    items: tuple[str, ...] = Field(min_length=1)
    follow_up_plan: bool = False

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, dict) else value


class TemplateModel(_Model):
    version: Literal[1] = 1
    definitions: dict[str, Any] = {}  # free space for YAML anchors
    organization: OrganizationModel = OrganizationModel()
    risk: RiskModel = RiskModel()
    escalation_profiles: dict[str, Steps] = {}
    default_escalation: str | None = None
    items: tuple[ItemModel, ...] = Field(min_length=1)
    follow_up_plans: dict[PlanBand, tuple[str, ...]] = {}
    variants: tuple[VariantModel, ...] = Field(min_length=1)


class OverlayHolidaysModel(_Model):
    calendar: Literal["us-federal"] | None = None
    subdivision: str | None = None
    closures: tuple[date, ...] | None = None
    removed: tuple[date, ...] | None = None


class OverlayModel(_Model):
    definitions: dict[str, Any] = {}
    timezone: str | None = None
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
    holidays: OverlayHolidaysModel | None = None
    risk: RiskModel | None = None
    escalation_profiles: dict[str, Steps] = {}
    default_escalation: str | None = None
    items: tuple[ItemOverlayModel, ...] = ()
    switch_off: tuple[str, ...] = ()
    follow_up_plans: dict[PlanBand, tuple[str, ...]] = {}

    _off = field_validator("switch_off", mode="before")(_tuple)


# -- loading --------------------------------------------------------------------------------------


_TAGS = frozenset({"escalation-profile", "escalation-steps"})


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _pydantic_problem(source: Path, exc: ValidationError, rename: Mapping[int, str] | None) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # drop the tags of the escalation union (a profile name or a list of steps)
        loc = tuple(p for p in loc if p not in _TAGS)
        where = _where(loc)
        if rename and len(loc) >= 2 and loc[0] == "items" and loc[1] in rename:
            rest = _where(loc[2:]) if len(loc) > 2 else ""
            where = rename[int(loc[1])] + ("" if not rest or rest[0] == "[" else ".") + rest
        message = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return f"{source}: " + "; ".join(dict.fromkeys(problems))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise TemplateError(f"{path}: cannot be read: {exc.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: (root): must be a mapping")
    return data


def load_templates(config_dir: Path) -> TemplateSet:
    """Read and check ``config_dir/transitions``: ``default.yaml`` and every organisation overlay
    under ``organizations/``. Raises :class:`TemplateError` naming the file and the field."""
    folder = feature_config_dir(Path(config_dir), TRANSITIONS_DIR) / TRANSITIONS_DIR
    default_path = folder / DEFAULT_FILE
    if not default_path.is_file():
        raise TemplateError(f"{default_path}: missing (the default checklist template)")
    raw = _read_yaml(default_path)
    try:
        base = TemplateModel.model_validate(raw)
    except ValidationError as exc:
        raise TemplateError(_pydantic_problem(default_path, exc, None)) from None
    origins = {item.key: (default_path, f"items[{i}]") for i, item in enumerate(base.items)}
    _check_template(base, default_path, origins)
    default = _setup(None, base, frozenset(), default_path, origins)

    organizations: dict[str, OrganizationSetup] = {}
    org_dir = folder / ORGANIZATIONS_DIR
    if org_dir.is_dir():
        for path in sorted(org_dir.iterdir()):
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                continue
            organizations[path.stem] = _load_overlay(path.stem, path, raw, base)
    return TemplateSet(default=default, organizations=organizations)


def _load_overlay(
    org_id: str, path: Path, raw_base: dict[str, Any], base: TemplateModel
) -> OrganizationSetup:
    raw = _read_yaml(path)
    try:
        overlay = OverlayModel.model_validate(raw)
    except ValidationError as exc:
        raise TemplateError(_pydantic_problem(path, exc, None)) from None
    known = {item.key for item in base.items}
    for i, key in enumerate(overlay.switch_off):
        if key not in known:
            raise TemplateError(f"{path}: switch_off[{i}]: unknown item {key!r}")
    variant_names = {v.name for v in base.variants}
    raw_items: list[dict[str, Any]] = [dict(item) for item in raw_base["items"]]
    index = {item["key"]: i for i, item in enumerate(raw_items)}
    origins = {key: (path.parent.parent / DEFAULT_FILE, f"items[{i}]") for key, i in index.items()}
    rename: dict[int, str] = {}
    raw_variants = [dict(v) for v in raw_base["variants"]]
    raw_overlay_items = raw.get("items") or []
    overlay_keys: dict[str, int] = {}
    for i, (item, item_raw) in enumerate(zip(overlay.items, raw_overlay_items, strict=True)):
        where = f"items[{i}]"
        if item.key in overlay_keys:
            raise TemplateError(
                f"{path}: {where}.key: duplicate key {item.key!r} "
                f"(also items[{overlay_keys[item.key]}])"
            )
        overlay_keys[item.key] = i
        fields = {k: v for k, v in item_raw.items() if k != "variants"}
        if item.key in index:
            if item.variants is not None:
                raise TemplateError(
                    f"{path}: {where}.variants: only a new item names its variants "
                    f"({item.key!r} is a default item: switch it off or override its fields)"
                )
            position = index[item.key]
            raw_items[position] = {**raw_items[position], **fields}
        else:
            missing = [f for f in ("code", "owner", "due") if f not in fields]
            if missing:
                raise TemplateError(
                    f"{path}: {where}: a new item needs {', '.join(missing)} "
                    f"({item.key!r} is not a default item)"
                )
            position = len(raw_items)
            raw_items.append(fields)
            index[item.key] = position
            targets = item.variants if item.variants is not None else tuple(variant_names)
            for j, name in enumerate(targets):
                if name not in variant_names:
                    raise TemplateError(f"{path}: {where}.variants[{j}]: unknown variant {name!r}")
            for variant in raw_variants:
                if variant["name"] in targets:
                    variant["items"] = [*variant["items"], item.key]
        rename[position] = where
        origins[item.key] = (path, where)
    merged: dict[str, Any] = {**raw_base, "items": raw_items, "variants": raw_variants}
    organization = dict(raw_base.get("organization") or {})
    if overlay.timezone is not None:
        organization["timezone"] = overlay.timezone
    if overlay.language is not None:
        organization["language"] = overlay.language
    if overlay.holidays is not None:
        holidays_ = dict(organization.get("holidays") or {})
        holidays_.update(overlay.holidays.model_dump(exclude_none=True))
        organization["holidays"] = holidays_
    merged["organization"] = organization
    if overlay.risk is not None:
        merged["risk"] = raw["risk"]
    if overlay.escalation_profiles:
        merged["escalation_profiles"] = {
            **(raw_base.get("escalation_profiles") or {}),
            **raw["escalation_profiles"],
        }
    if overlay.default_escalation is not None:
        merged["default_escalation"] = overlay.default_escalation
    if overlay.follow_up_plans:
        merged["follow_up_plans"] = {
            **(raw_base.get("follow_up_plans") or {}),
            **raw["follow_up_plans"],
        }
    try:
        template = TemplateModel.model_validate(merged)
    except ValidationError as exc:
        raise TemplateError(_pydantic_problem(path, exc, rename)) from None
    _check_template(template, path, origins, overlay_path=path)
    return _setup(org_id, template, frozenset(overlay.switch_off), path, origins)


def _check_template(
    template: TemplateModel,
    path: Path,
    origins: Mapping[str, tuple[Path, str]],
    *,
    overlay_path: Path | None = None,
) -> None:
    """References between items, variants, plans and profiles; no cycles."""
    seen: dict[str, int] = {}
    for i, item in enumerate(template.items):
        if item.key in seen:
            raise TemplateError(
                f"{path}: items[{i}].key: duplicate key {item.key!r} (also items[{seen[item.key]}])"
            )
        seen[item.key] = i
    profiles = template.escalation_profiles
    if template.default_escalation is not None and template.default_escalation not in profiles:
        raise TemplateError(
            f"{path}: default_escalation: unknown escalation profile "
            f"{template.default_escalation!r}"
        )

    def where(key: str) -> str:
        file, field = origins.get(key, (path, f"items[{seen[key]}]"))
        if overlay_path is not None and file != overlay_path:
            return f"{overlay_path}: items[{key}]"  # a default item, broken by this overlay
        return f"{file}: {field}"

    for item in template.items:
        due = item.due
        if due.after is not None and due.after not in seen:
            raise TemplateError(f"{where(item.key)}.due.after: unknown item {due.after!r}")
        if due.after == item.key:
            raise TemplateError(f"{where(item.key)}.due.after: an item cannot follow itself")
        for j, ref in enumerate(due.no_later_than):
            if ref not in seen:
                raise TemplateError(
                    f"{where(item.key)}.due.no_later_than[{j}]: unknown item {ref!r}"
                )
            if ref == item.key:
                raise TemplateError(
                    f"{where(item.key)}.due.no_later_than[{j}]: an item cannot bound itself"
                )
        if isinstance(item.escalation, str) and item.escalation not in profiles:
            raise TemplateError(
                f"{where(item.key)}.escalation: unknown escalation profile {item.escalation!r}"
            )
    names: set[str] = set()
    for i, variant in enumerate(template.variants):
        if variant.name in names:
            raise TemplateError(f"{path}: variants[{i}].name: duplicate variant {variant.name!r}")
        names.add(variant.name)
        for j, key in enumerate(variant.items):
            if key not in seen:
                raise TemplateError(f"{path}: variants[{i}].items[{j}]: unknown item {key!r}")
    for band, keys in template.follow_up_plans.items():
        for j, key in enumerate(keys):
            if key not in seen:
                raise TemplateError(f"{path}: follow_up_plans.{band}[{j}]: unknown item {key!r}")
    _order(template, where)


def _order(template: TemplateModel, where: Any) -> tuple[str, ...]:
    """Every key after the items its due rule depends on; a cycle is an error."""
    deps = {
        item.key: ((item.due.after,) if item.due.after else ()) + item.due.no_later_than
        for item in template.items
    }
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(key: str, trail: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = " -> ".join([*trail[trail.index(key) :], key])
            raise TemplateError(f"{where(key)}.due: due rules form a cycle ({cycle})")
        state[key] = 1
        for dep in deps[key]:
            visit(dep, [*trail, key])
        state[key] = 2
        order.append(key)

    for item in template.items:
        visit(item.key, [])
    return tuple(order)


def _setup(
    org_id: str | None,
    model: TemplateModel,
    switched_off: frozenset[str],
    path: Path,
    origins: Mapping[str, tuple[Path, str]],
) -> OrganizationSetup:
    org = model.organization
    try:
        calendar = BusinessCalendar.us_federal(
            org.timezone,
            subdivision=org.holidays.subdivision,
            closures=org.holidays.closures,
            removed=org.holidays.removed,
        )
    except ValueError as exc:
        field = "timezone" if "time zone" in str(exc) else "holidays.subdivision"
        prefix = "organization." if org_id is None else ""
        raise TemplateError(f"{path}: {prefix}{field}: {exc}") from None
    profiles = {
        name: tuple(_step(s) for s in steps) for name, steps in model.escalation_profiles.items()
    }
    default_steps = profiles.get(model.default_escalation or "", ())
    items: dict[str, ItemTemplate] = {}
    for item in model.items:
        if isinstance(item.escalation, str):
            steps = profiles[item.escalation]
        elif isinstance(item.escalation, tuple):
            steps = tuple(_step(s) for s in item.escalation)
        else:
            steps = default_steps
        items[item.key] = ItemTemplate(
            key=item.key,
            code=item.code,
            title=item.title or task_display(item.code),
            owner=item.owner,
            due=item.due.rule(),
            priority=item.priority,
            required=item.required,
            when=item.when.conditions(),
            escalation=steps,
        )
    variants = tuple(
        Variant(
            name=v.name,
            match=tuple(
                VariantMatch(
                    encounter_class=None
                    if m.encounter_class is None
                    else frozenset(c.upper() for c in m.encounter_class),
                    destination=None if m.destination is None else frozenset(m.destination),
                    home_health=m.home_health,
                )
                for m in v.match
            ),
            items=tuple(dict.fromkeys(v.items)),
            follow_up_plan=v.follow_up_plan,
        )
        for v in model.variants
    )
    template = Template(
        items=items,
        variants=variants,
        follow_up_plans={band: tuple(keys) for band, keys in model.follow_up_plans.items()},
        complexity_by_band={str(band): c for band, c in model.risk.complexity.items()},
        no_band_complexity=model.risk.no_band_complexity,
        switched_off=switched_off,
        order=_order(model, lambda key: f"{path}: {origins.get(key, (path, key))[1]}"),
    )
    return OrganizationSetup(
        organization=org_id,
        calendar=calendar,
        language=org.language,
        timezone=org.timezone,
        template=template,
    )


def _step(step: StepModel) -> EscalationStep:
    notify: tuple[Notify, ...] = tuple(
        "owner" if n == "owner" else CareRole(n) for n in step.notify
    )
    return EscalationStep(step.name, step.when, timedelta(hours=step.hours), notify)
