"""Handlers registered on the default registry, for ``carecoord worker --import`` tests."""

from __future__ import annotations

from typing import Any

from carecoord.jobs import JobContext, handler

SEEN: list[int] = []


@handler("tests.echo")
def echo(payload: dict[str, Any], ctx: JobContext) -> None:
    SEEN.append(int(payload["n"]))
