"""Job handlers of PCCM: a PCP leaving a program has their panel reassigned in the background."""

from __future__ import annotations

from typing import Any, Final

from carecoord.jobs import Fatal, JobContext, Registry
from carecoord.settings import ConfigError, Settings

__all__ = ["PCP_LEFT_JOB", "register_handlers"]

#: Payload ``{"program", "pcp", "reason"?}``; rerunning it reassigns only who is still left.
PCP_LEFT_JOB: Final = "pccm.pcp-left"


class _PcpLeft:
    """The ``pccm.pcp-left`` handler; the settings are replaced when apps are rebuilt."""

    def __init__(self) -> None:
        self.settings: Settings | None = None

    def __call__(self, payload: dict[str, Any], ctx: JobContext) -> None:
        from carecoord.pccm.program import load_programs
        from carecoord.pccm.service import PccmService
        from carecoord.transitions.handlers import automation_store

        if self.settings is None:
            raise Fatal("PCCM handlers were registered without settings")
        try:
            programs = load_programs(self.settings.config_dir)
        except ConfigError as exc:
            raise Fatal("PCCM program configuration is invalid") from exc
        if payload.get("program") not in programs:
            raise Fatal("unknown PCCM program")
        store = automation_store(self.settings, ctx.engine)
        service = PccmService(store, programs, clock=ctx.clock)
        service.pcp_leaves(
            str(payload["program"]), str(payload["pcp"]), reason=payload.get("reason")
        )


_handler = _PcpLeft()


def register_handlers(registry: Registry, *, settings: Settings | None = None) -> None:
    """Register this package's job handlers on ``registry`` (again: just update settings)."""
    if settings is not None:
        _handler.settings = settings
    if PCP_LEFT_JOB not in registry:
        registry.register(PCP_LEFT_JOB, _handler)
