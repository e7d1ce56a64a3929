"""Importing this module registers the automation jobs (transitions, PCCM, cases) on the default
registry, for ``carecoord worker`` (listed in ``carecoord.jobs.registry.HANDLER_MODULES``)."""

from __future__ import annotations

from carecoord.cases import handlers as case_handlers
from carecoord.jobs import default_registry
from carecoord.pccm import handlers as pccm_handlers
from carecoord.transitions import handlers as transition_handlers

__all__: list[str] = []

for _module in (transition_handlers, pccm_handlers, case_handlers):
    _module.register_handlers(default_registry)
