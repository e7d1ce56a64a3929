"""Charlson comorbidity: codes to categories (Quan 2005, SNOMED CT), hierarchy and weights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CharlsonMapping", "CharlsonResult", "charlson_score"]


@dataclass(frozen=True)
class CharlsonMapping:
    """Category of a code per system: exact codes or (dot-free) prefixes, with exclusions."""

    systems: frozenset[str]
    prefix: bool
    categories: Mapping[str, tuple[str, ...]]
    exclude: Mapping[str, tuple[str, ...]]
    _cache: dict[tuple[str, str], frozenset[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @staticmethod
    def _norm(code: str, prefix: bool) -> str:
        return code.replace(".", "").upper() if prefix else code

    def categories_of(self, system: str, code: str) -> frozenset[str]:
        if system not in self.systems:
            return frozenset()
        key = (system, code)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = frozenset(self._lookup(code))
        return found

    def _lookup(self, code: str) -> set[str]:
        key = self._norm(code, self.prefix)
        found: set[str] = set()
        for category, codes in self.categories.items():
            if self.prefix:
                hit = any(key.startswith(self._norm(c, True)) for c in codes)
                if hit and any(
                    key.startswith(self._norm(c, True)) for c in self.exclude.get(category, ())
                ):
                    hit = False
            else:
                hit = key in codes
            if hit:
                found.add(category)
        return found


@dataclass(frozen=True)
class CharlsonResult:
    """The categories present (after the hierarchy) and their weighted sum."""

    score: int
    categories: tuple[str, ...]


def charlson_score(
    codings: Iterable[tuple[str, str]],
    mappings: Sequence[CharlsonMapping],
    weights: Mapping[str, int],
    hierarchy: Sequence[tuple[str, str]],
) -> CharlsonResult:
    """Charlson score of a patient's condition codings.

    Each category counts once; ``hierarchy`` pairs (keep, drop) remove the milder category when the
    severer one is present (complicated diabetes replaces uncomplicated, and so on).
    """
    present: set[str] = set()
    for system, code in codings:
        for mapping in mappings:
            present |= mapping.categories_of(system, code)
    for keep, drop in hierarchy:
        if keep in present:
            present.discard(drop)
    ordered = tuple(sorted(present))
    return CharlsonResult(sum(weights.get(c, 0) for c in ordered), ordered)
