"""EHR sync: a resilient FHIR client per connection, source identity, incremental pull, status.

- :class:`EhrClient` (``client.py``): backend-services auth, ``Retry-After``, one re-auth on 401,
  an in-flight limit and a circuit breaker per connection, paging on the EHR's own host only.
  Push and Bulk Data build on :meth:`EhrClient.send`.
- Source identity (``identity.py``, ADR 0011): ``local_id(connection, type, source id)``, the
  ``sync_identities`` map both ways, references rewritten to local ids.
- Pull (``pull.py``): per connection and population, each page committed with its checkpoint.
- Status (``status.py``, ``GET /sync/status``, ``carecoord sync status``) and the ``sync.pull``
  job (``handlers.py``); ``carecoord sync run`` (``cli.py``).
- One write path for EHR resources (``upsert.py``, ADR 0021): pull, Bulk Data, notifications, Da
  Vinci messages of mapped senders and the ``sync.fetch`` job (``fetch.py``) store the same EHR
  resource as the same local one, a source version already stored (or a later one) skipped.
- Push conflicts (``conflicts.py``): ``carecoord sync conflicts list|resolve ID --keep
  ours|theirs``, ``GET /sync/conflicts``.

Errors::

    SyncError                       base; messages carry no URL query, id, token or PHI
    ├── TemporaryError              try again later (.retry_after: seconds or None)
    │   ├── EhrUnreachable          timeout, connection error, discovery/token endpoint down
    │   ├── RateLimited             429 after the retries (or a longer Retry-After)
    │   ├── EhrServerError          5xx after the retries (.status)
    │   ├── CircuitOpen             the connection's circuit is open: failing fast
    │   └── PullStopped             the worker stopped the pull; it resumes from its checkpoint
    └── FatalError                  retrying will not help
        ├── AuthorizationFailed     401 after one new token, or our client refused
        ├── RequestRejected         400, 403, 404, 410, 422 ... (.status)
        ├── InvalidResponse         not JSON, not the expected Bundle or resource
        ├── ForeignLink             a paging link to another host
        └── SyncConfigError         (also ValueError) bad sync config, population or connection

A resource in a page that is not valid FHIR is left out and counted as ``rejected``; the page and
the rest of the pull go on.
"""

from __future__ import annotations

from carecoord.sync.breaker import CircuitBreaker, CircuitSnapshot, CircuitState
from carecoord.sync.client import EhrClient, EhrResponse, SearchPage, new_http_client
from carecoord.sync.config import (
    ConnectionSync,
    Population,
    SyncConfig,
    load_sync_config,
    parse_population,
)
from carecoord.sync.errors import (
    AuthorizationFailed,
    CircuitOpen,
    EhrServerError,
    EhrUnreachable,
    FatalError,
    ForeignLink,
    InvalidResponse,
    PullStopped,
    RateLimited,
    RequestRejected,
    SyncConfigError,
    SyncError,
    TemporaryError,
)
from carecoord.sync.handlers import PULL_KIND, enqueue_pull, register_handlers
from carecoord.sync.identity import (
    SOURCE_TAG_SYSTEM,
    Identity,
    ReferenceMapper,
    local_id,
    source_of,
    source_reference,
)
from carecoord.sync.pull import Puller, PullReport
from carecoord.sync.quirks import SyncQuirks, quirks_for
from carecoord.sync.routes import install
from carecoord.sync.runtime import SyncRuntime
from carecoord.sync.status import ConnectionStatus, sync_status

__all__ = [
    "PULL_KIND",
    "SOURCE_TAG_SYSTEM",
    "AuthorizationFailed",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitSnapshot",
    "CircuitState",
    "ConnectionStatus",
    "ConnectionSync",
    "EhrClient",
    "EhrResponse",
    "EhrServerError",
    "EhrUnreachable",
    "FatalError",
    "ForeignLink",
    "Identity",
    "InvalidResponse",
    "Population",
    "PullReport",
    "PullStopped",
    "Puller",
    "RateLimited",
    "ReferenceMapper",
    "RequestRejected",
    "SearchPage",
    "SyncConfig",
    "SyncConfigError",
    "SyncError",
    "SyncQuirks",
    "SyncRuntime",
    "TemporaryError",
    "enqueue_pull",
    "install",
    "load_sync_config",
    "local_id",
    "new_http_client",
    "parse_population",
    "quirks_for",
    "register_handlers",
    "source_of",
    "source_reference",
    "sync_status",
]
