"""Importing this module registers the sync jobs (pull, push, bulk) on the default registry.

For ``carecoord worker``: list it in ``carecoord.jobs.registry.HANDLER_MODULES`` or pass
``--import carecoord.sync.autoregister``. Settings are read from the environment at the first job.
"""

from __future__ import annotations

from carecoord.jobs import default_registry
from carecoord.sync.bulk import register_bulk_handlers
from carecoord.sync.handlers import register_handlers
from carecoord.sync.push import register_push_handlers

__all__: list[str] = []

register_handlers(default_registry)
register_push_handlers(default_registry)
register_bulk_handlers(default_registry)
