"""An async FHIR client for one EHR connection, with the resilience rules of EHR sync.

- **Auth**: any ``httpx.Auth``; in service use the connection's SMART backend-services auth
  (:class:`carecoord.smart.backend.BackendAuth`), which fetches and caches the token and, on a
  401, gets one new token and retries once. A second 401 is :class:`AuthorizationFailed`.
- **Retries**: 429 and 503 honour ``Retry-After`` (seconds or an HTTP date) up to
  ``max_retry_wait_seconds``; other 5xx, timeouts and connection errors back off exponentially.
  At most ``max_retries`` retries, then the :class:`TemporaryError` is raised (with the wait the
  server asked for, so a job can be rescheduled).
- **In flight**: at most ``max_in_flight`` requests per connection (a semaphore; waits between
  retries hold no slot).
- **Circuit breaker** per connection (:mod:`carecoord.sync.breaker`).
- **Classification**: temporary (timeouts, connection errors, 429, 5xx, an open circuit) vs fatal
  (400, 403, 404 for a search, 401 after re-authorisation, JSON that is not the expected FHIR).
- **Paging**: ``next`` links are followed only on the connection's own scheme, host and port.

Logs name the connection, method, resource type, status and duration: never a URL with its
query, an id, a header or a body.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson

from carecoord import __version__
from carecoord.smart.connections import EhrConnection
from carecoord.smart.errors import (
    DiscoveryError,
    EhrAccessError,
    TokenEndpointUnavailable,
    TokenRejected,
)
from carecoord.sync.breaker import CircuitBreaker
from carecoord.sync.config import ConnectionSync
from carecoord.sync.errors import (
    AuthorizationFailed,
    EhrServerError,
    EhrUnreachable,
    ForeignLink,
    InvalidResponse,
    RateLimited,
    RequestRejected,
    TemporaryError,
)
from carecoord.sync.quirks import SyncQuirks
from carecoord.sync.retry import backoff, parse_retry_after

__all__ = ["EhrClient", "EhrResponse", "SearchPage", "new_http_client"]

log = logging.getLogger("carecoord.sync.client")

FHIR_JSON = "application/fhir+json"
Params = Sequence[tuple[str, str]]
Sleep = Callable[[float], Awaitable[None]]


def new_http_client(limits: ConnectionSync) -> httpx.AsyncClient:
    """An httpx client for one connection: no redirects, its timeout, as many connections as
    requests may be in flight."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(limits.timeout_seconds, connect=min(5.0, limits.timeout_seconds)),
        follow_redirects=False,
        limits=httpx.Limits(
            max_connections=limits.max_in_flight, max_keepalive_connections=limits.max_in_flight
        ),
        headers={"User-Agent": f"CareCoord/{__version__}"},
    )


@dataclass(frozen=True, slots=True)
class EhrResponse:
    """An answer that is not a temporary failure (any status; the body read in full)."""

    status: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        """The body as JSON; :class:`InvalidResponse` when it is not."""
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError:
            raise InvalidResponse(f"the answer ({self.status}) is not JSON") from None

    @property
    def server_time(self) -> datetime | None:
        """The server's clock (``Date`` header), when it sent one."""
        value = self.headers.get("date")
        if not value:
            return None
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        return moment if moment.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of a search: its resources (OperationOutcome entries of mode ``outcome`` left
    out), the next page's URL (checked to be on the connection's host) and the server's time."""

    res_type: str
    resources: list[dict[str, Any]]
    next_url: str | None
    server_time: datetime | None = None


def _what(method: str, res_type: str, kind: str) -> str:
    return f"{method} {res_type} {kind}".rstrip()


class EhrClient:
    """FHIR calls to one EHR connection; share one per connection and event loop."""

    def __init__(
        self,
        connection: EhrConnection,
        *,
        http: httpx.AsyncClient,
        auth: httpx.Auth | None = None,
        limits: ConnectionSync | None = None,
        breaker: CircuitBreaker | None = None,
        quirks: SyncQuirks | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.connection = connection
        self.name = connection.name
        self.base = connection.iss
        self.limits = limits or ConnectionSync()
        self.quirks = quirks or SyncQuirks()
        self.breaker = breaker or CircuitBreaker(
            connection.name,
            failures=self.limits.circuit_failures,
            cooldown=self.limits.circuit_cooldown_seconds,
            clock=clock,
        )
        self._http = http
        self._auth = auth
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(self.limits.max_in_flight)
        base = urlsplit(self.base)
        self._origin = (base.scheme.lower(), base.netloc.lower())

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- URLs ------------------------------------------------------------------------------------

    def url(self, res_type: str, res_id: str | None = None) -> str:
        """``{iss}/{type}`` or ``{iss}/{type}/{id}`` (escaped)."""
        path = f"{self.base}/{quote(res_type, safe='')}"
        return path if res_id is None else f"{path}/{quote(res_id, safe='')}"

    def check_link(self, url: str) -> str:
        """The absolute form of a paging link on this connection's host; :class:`ForeignLink`
        for any other scheme, host or port."""
        absolute = urljoin(self.base + "/", url)
        parts = urlsplit(absolute)
        if (parts.scheme.lower(), parts.netloc.lower()) != self._origin:
            raise ForeignLink(f"EHR '{self.name}' sent a paging link to another host; not followed")
        return absolute

    # -- the request loop ------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        what: str = "request",
        retry: bool = True,
    ) -> EhrResponse:
        """One request with auth, the in-flight limit, the circuit and retries.

        Returns any answer that is not a temporary failure (check ``status``); raises
        :class:`TemporaryError` once retries are used up, :class:`AuthorizationFailed` on a 401
        that a new token did not cure. ``what`` (no ids, no query) names it in logs and errors.
        Only idempotent requests (GET, conditional writes) should keep ``retry``.
        """
        request_headers = {"Accept": self.quirks.accept, **(headers or {})}
        content = orjson.dumps(json) if json is not None else None
        if content is not None:
            request_headers.setdefault("Content-Type", FHIR_JSON)
        attempt = 0
        while True:
            self.breaker.before()
            started = time.perf_counter()
            try:
                async with self._slots:
                    response = await self._http.request(
                        method,
                        url,
                        params=list(params) if params is not None else None,
                        content=content,
                        headers=request_headers,
                        auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                    )
            except asyncio.CancelledError:
                self.breaker.release()
                raise
            except TokenRejected as exc:
                if exc.status != 429:
                    self.breaker.success()  # the EHR answered; it refuses us
                    raise AuthorizationFailed(
                        f"EHR '{self.name}' refused our backend-services client on {what} "
                        f"(token endpoint {exc.status} {exc.error}); check the registration"
                    ) from None
                failure: TemporaryError = RateLimited(
                    f"EHR '{self.name}' token endpoint answered 429 on {what}"
                )
            except EhrAccessError as exc:
                self.breaker.success()  # the EHR answered; it refuses us
                raise AuthorizationFailed(
                    f"EHR '{self.name}' refused our backend-services client on {what} "
                    f"({type(exc).__name__}); check the registration, key and scopes"
                ) from None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                failure = EhrUnreachable(f"EHR '{self.name}' {what}: {type(exc).__name__}")
            except (TokenEndpointUnavailable, DiscoveryError) as exc:
                failure = EhrUnreachable(f"EHR '{self.name}' {what}: {type(exc).__name__}")
            else:
                status = response.status_code
                elapsed = (time.perf_counter() - started) * 1000
                log.debug(
                    "EHR %s: %s -> %d in %.0f ms (attempt %d)",
                    self.name,
                    what,
                    status,
                    elapsed,
                    attempt + 1,
                )
                if status != 429 and status < 500:
                    self.breaker.success()
                    if status == 401:
                        raise AuthorizationFailed(f"EHR '{self.name}' answered 401 to {what}")
                    return EhrResponse(status, response.headers, response.content)
                wait = parse_retry_after(response.headers.get("retry-after"), now=self._clock())
                if status == 429:
                    failure = RateLimited(
                        f"EHR '{self.name}' answered 429 to {what}", retry_after=wait
                    )
                else:
                    failure = EhrServerError(
                        f"EHR '{self.name}' answered {status} to {what}",
                        status=status,
                        retry_after=wait,
                    )
            self.breaker.failure()
            delay = failure.retry_after
            if delay is None:
                delay = backoff(attempt, base=self.limits.backoff_base_seconds, rng=self._rng)
            if not retry or attempt >= self.limits.max_retries:
                log.info("EHR %s: %s failed: %s", self.name, what, type(failure).__name__)
                raise failure
            if delay > self.limits.max_retry_wait_seconds:
                log.info("EHR %s: %s: asked to wait %.0f s; giving up", self.name, what, delay)
                raise failure
            attempt += 1
            log.info(
                "EHR %s: %s: %s; retry %d in %.1f s",
                self.name,
                what,
                type(failure).__name__,
                attempt,
                delay,
            )
            await self._sleep(delay)

    # -- FHIR interactions -----------------------------------------------------------------------

    def _rejected(self, response: EhrResponse, what: str) -> RequestRejected:
        return RequestRejected(
            f"EHR '{self.name}' answered {response.status} to {what}", status=response.status
        )

    async def read(self, res_type: str, res_id: str) -> dict[str, Any]:
        """``GET {iss}/{type}/{id}``; :class:`RequestRejected` (404, 410 ...) when not there."""
        what = _what("GET", res_type, "read")
        response = await self.send("GET", self.url(res_type, res_id), what=what)
        if response.status != 200:
            raise self._rejected(response, what)
        body = response.json()
        if not isinstance(body, dict) or body.get("resourceType") != res_type:
            raise InvalidResponse(f"EHR '{self.name}' did not answer {what} with a {res_type}")
        return body

    async def search(self, res_type: str, params: Params) -> SearchPage:
        """The first page of ``GET {iss}/{type}?params``."""
        return await self._page(res_type, self.url(res_type), params, "search")

    async def next_page(self, res_type: str, url: str) -> SearchPage:
        """The page at a ``next`` link (refused unless on the connection's host)."""
        return await self._page(res_type, self.check_link(url), None, "search page")

    async def pages(
        self, res_type: str, params: Params, *, start_url: str | None = None
    ) -> AsyncIterator[SearchPage]:
        """Every page of a search, following ``next`` links (from ``start_url`` if given)."""
        page = (
            await self.next_page(res_type, start_url)
            if start_url
            else await self.search(res_type, params)
        )
        while True:
            yield page
            if page.next_url is None:
                return
            page = await self.next_page(res_type, page.next_url)

    async def search_all(self, res_type: str, params: Params) -> AsyncIterator[dict[str, Any]]:
        """Every resource a search returns, across its pages."""
        async for page in self.pages(res_type, params):
            for resource in page.resources:
                yield resource

    async def _page(self, res_type: str, url: str, params: Params | None, kind: str) -> SearchPage:
        what = _what("GET", res_type, kind)
        response = await self.send("GET", url, params=params, what=what)
        if response.status != 200:
            raise self._rejected(response, what)
        body = response.json()
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise InvalidResponse(f"EHR '{self.name}' did not answer {what} with a Bundle")
        resources: list[dict[str, Any]] = []
        entries = body.get("entry") or []
        if not isinstance(entries, list):
            raise InvalidResponse(f"EHR '{self.name}': {what}: Bundle.entry is not a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise InvalidResponse(f"EHR '{self.name}': {what}: an entry is not an object")
            search = entry.get("search")
            if isinstance(search, dict) and search.get("mode") == "outcome":
                continue
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                raise InvalidResponse(f"EHR '{self.name}': {what}: an entry has no resource")
            resources.append(resource)
        next_url = None
        for link in body.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next":
                target = link.get("url")
                if not isinstance(target, str) or not target:
                    raise InvalidResponse(f"EHR '{self.name}': {what}: a next link has no url")
                next_url = self.check_link(target)
        return SearchPage(res_type, resources, next_url, response.server_time)
