"""Display names of the people and organisations that resources point at, read in batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from carecoord.smart.pages import patient_display
from carecoord.web.reads import ScreenReader

__all__ = ["display_name", "names_of"]

_NAMED = ("Patient", "Practitioner", "RelatedPerson", "Organization", "PractitionerRole")


def display_name(resource: Mapping[str, Any]) -> str:
    """A person's or organisation's name for display."""
    kind = resource.get("resourceType")
    if kind == "Organization" or kind == "Location":
        return str(resource.get("name") or resource.get("id") or "")
    if kind == "PractitionerRole":
        who = resource.get("practitioner")
        if isinstance(who, Mapping) and who.get("display"):
            return str(who["display"])
        return str(resource.get("id") or "")
    return patient_display(dict(resource))["name"]


def names_of(reader: ScreenReader, references: Iterable[str | None]) -> dict[str, str]:
    """``Type/id`` -> display name for the references (one search per type and 100 ids);
    a PractitionerRole is named after its practitioner."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for ref in references:
        if ref and ref.count("/") == 1:
            kind, rid = ref.split("/")
            if kind in _NAMED:
                wanted[kind].add(rid)
    names: dict[str, str] = {}
    roles: dict[str, str] = {}
    for kind, ids in wanted.items():
        ordered = sorted(ids)
        for i in range(0, len(ordered), 100):
            chunk = ",".join(ordered[i : i + 100])
            for res in reader.search(kind, [("_id", chunk)], limit=100):
                ref = f"{kind}/{res.get('id')}"
                names[ref] = display_name(res)
                who = res.get("practitioner")
                if kind == "PractitionerRole" and isinstance(who, Mapping):
                    target = who.get("reference")
                    if isinstance(target, str) and not who.get("display"):
                        roles[ref] = target
    if roles:
        people = names_of(reader, roles.values())
        for ref, target in roles.items():
            names[ref] = people.get(target, names[ref])
    return names
