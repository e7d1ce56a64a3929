"""Matching FHIR codings against configured ``system|code`` and ``system|prefix*`` tokens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["CodeSet", "Coding", "codings_of", "parse_token"]

#: A coding as (system, code).
Coding = tuple[str, str]


def parse_token(token: str) -> tuple[str, str, bool]:
    """``"system|code"`` -> (system, code, is_prefix); ``code*`` marks a prefix."""
    system, sep, code = token.partition("|")
    if not sep or not system or not code:
        raise ValueError(f"{token!r} is not 'system|code' (or 'system|prefix*')")
    if code.endswith("*"):
        return system, code[:-1], True
    return system, code, False


@dataclass(frozen=True)
class CodeSet:
    """Exact codes and code prefixes per system."""

    exact: frozenset[Coding]
    prefixes: tuple[Coding, ...]

    @classmethod
    def of(cls, tokens: Iterable[str]) -> CodeSet:
        """The set of ``tokens`` (cached: configurations build the same sets again and again)."""
        return _code_set(tuple(tokens))

    @classmethod
    def _build(cls, tokens: tuple[str, ...]) -> CodeSet:
        exact: set[Coding] = set()
        prefixes: list[Coding] = []
        for token in tokens:
            system, code, is_prefix = parse_token(token)
            if is_prefix:
                prefixes.append((system, code))
            else:
                exact.add((system, code))
        return cls(frozenset(exact), tuple(prefixes))

    def matches(self, coding: Coding) -> bool:
        if coding in self.exact:
            return True
        system, code = coding
        return any(system == s and code.startswith(p) for s, p in self.prefixes)

    def any_match(self, codings: Iterable[Coding]) -> bool:
        return any(self.matches(c) for c in codings)


@lru_cache(maxsize=256)
def _code_set(tokens: tuple[str, ...]) -> CodeSet:
    return CodeSet._build(tokens)


def codings_of(concepts: Iterable[Any]) -> list[Coding]:
    """The (system, code) pairs of CodeableConcepts (non-dicts are ignored)."""
    out: list[Coding] = []
    for concept in concepts:
        if not isinstance(concept, Mapping):
            continue
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping):
                system, code = coding.get("system"), coding.get("code")
                if isinstance(system, str) and isinstance(code, str):
                    out.append((system, code.strip()))
    return out
