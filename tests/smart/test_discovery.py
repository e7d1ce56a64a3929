"""Discovery: smart-configuration, the CapabilityStatement fallback, caching, and clear errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from carecoord.smart.connections import ConnectionRegistry, EhrConnection
from carecoord.smart.discovery import Discovery, SmartConfiguration, cache_seconds
from carecoord.smart.errors import DiscoveryError, UnknownConnection
from tests.smart.fake_ehr import FakeEhr

ISS = "https://ehr.example.org/fhir"
WELL_KNOWN = f"{ISS}/.well-known/smart-configuration"


def _connection(**extra: object) -> EhrConnection:
    return EhrConnection(name="test-ehr", iss=ISS, client_id="cc", **extra)  # type: ignore[arg-type]


def _discover(
    connection: EhrConnection, *, clock: list[float] | None = None, times: int = 1
) -> list[SmartConfiguration]:
    now = clock or [1000.0]

    async def run() -> list[SmartConfiguration]:
        async with httpx.AsyncClient() as http:
            registry = ConnectionRegistry({connection.name: connection})
            discovery = Discovery(registry, lambda: http, clock=lambda: now[0])
            return [await discovery.get(connection) for _ in range(times)]

    return asyncio.run(run())


def test_smart_configuration(ehr: FakeEhr, ehr_http: respx.MockRouter) -> None:
    (found,) = _discover(_connection())
    assert found.source == "smart-configuration"
    assert found.authorization_endpoint == ehr.authorize_url
    assert found.token_endpoint == ehr.token_url
    assert found.jwks_uri == ehr.jwks_uri
    assert found.issuer == ehr.issuer
    assert "permission-v2" in found.capabilities


def test_fallback_to_the_capability_statement(ehr: FakeEhr, ehr_http: respx.MockRouter) -> None:
    ehr.smart_configuration = False
    (found,) = _discover(_connection())
    assert found.source == "capability-statement"
    assert found.authorization_endpoint == ehr.authorize_url
    assert found.token_endpoint == ehr.token_url
    assert found.jwks_uri is None
    paths = [c.request.url.path for c in ehr_http.calls]
    assert paths == ["/fhir/.well-known/smart-configuration", "/fhir/metadata"]


def test_fallback_when_smart_configuration_is_not_json() -> None:
    statement = FakeEhr("https://ehr.example.org").capability_statement()
    with respx.mock() as mock:
        mock.get(WELL_KNOWN).mock(return_value=httpx.Response(200, text="<html>login</html>"))
        mock.get(f"{ISS}/metadata").mock(return_value=httpx.Response(200, json=statement))
        (found,) = _discover(_connection())
    assert found.source == "capability-statement"


def test_cached_for_the_default_hour(ehr: FakeEhr, ehr_http: respx.MockRouter) -> None:
    clock = [1000.0]
    _discover(_connection(), clock=clock, times=3)
    assert len(ehr_http.calls) == 1


def test_cache_control_max_age_is_honoured(ehr: FakeEhr, ehr_http: respx.MockRouter) -> None:
    ehr.discovery_cache_control = "public, max-age=60"
    clock = [1000.0]
    connection = _connection()

    async def run() -> None:
        async with httpx.AsyncClient() as http:
            registry = ConnectionRegistry({connection.name: connection})
            discovery = Discovery(registry, lambda: http, clock=lambda: clock[0])
            await discovery.get(connection)
            clock[0] += 59
            await discovery.get(connection)
            assert len(ehr_http.calls) == 1
            clock[0] += 2
            await discovery.get(connection)
            assert len(ehr_http.calls) == 2

    asyncio.run(run())


def test_no_store_is_not_cached(ehr: FakeEhr, ehr_http: respx.MockRouter) -> None:
    ehr.discovery_cache_control = "no-store"
    _discover(_connection(), times=2)
    assert len(ehr_http.calls) == 2


def test_cache_seconds() -> None:
    assert cache_seconds(httpx.Headers({})) == 3600
    assert cache_seconds(httpx.Headers({"cache-control": "max-age=120"})) == 120
    assert cache_seconds(httpx.Headers({"cache-control": "no-cache, max-age=120"})) == 0
    assert cache_seconds(httpx.Headers({"cache-control": "max-age=99999999"})) == 86400


def test_only_configured_connections_are_discovered() -> None:
    stranger = EhrConnection(name="other", iss="https://evil.example.org/fhir", client_id="x")
    with respx.mock() as mock:

        async def run() -> None:
            async with httpx.AsyncClient() as http:
                registry = ConnectionRegistry({"test-ehr": _connection()})
                await Discovery(registry, lambda: http).get(stranger)

        with pytest.raises(UnknownConnection):
            asyncio.run(run())
        assert not mock.calls


@pytest.mark.parametrize(
    ("well_known", "metadata", "message"),
    [
        (httpx.Response(404), httpx.Response(404), "answered 404"),
        (httpx.Response(500), httpx.Response(200, json={"resourceType": "Basic"}), "no oauth-uris"),
        (httpx.ConnectError("down"), None, "unreachable"),
        (httpx.ReadTimeout("slow"), None, "timed out"),
    ],
)
def test_errors_are_clear(
    well_known: httpx.Response | Exception, metadata: httpx.Response | None, message: str
) -> None:
    with respx.mock() as mock:
        mock.get(WELL_KNOWN).mock(side_effect=[well_known])
        if metadata is not None:
            mock.get(f"{ISS}/metadata").mock(return_value=metadata)
        with pytest.raises(DiscoveryError, match=message) as caught:
            _discover(_connection())
    assert "test-ehr" in str(caught.value)


def test_insecure_endpoints_are_refused() -> None:
    body = {
        "authorization_endpoint": "http://ehr.example.org/authorize",
        "token_endpoint": "https://ehr.example.org/token",
    }
    statement = FakeEhr("https://ehr.example.org").capability_statement()
    statement["rest"][0]["security"]["extension"][0]["extension"][1]["valueUri"] = (
        "http://ehr.example.org/token"
    )
    with respx.mock() as mock:
        mock.get(WELL_KNOWN).mock(return_value=httpx.Response(200, json=body))
        mock.get(f"{ISS}/metadata").mock(return_value=httpx.Response(200, json=statement))
        with pytest.raises(DiscoveryError, match="https"):
            _discover(_connection())


def test_vendor_profile_adjusts_what_was_found() -> None:
    tenant = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
    iss = f"https://fhir-ehr.cerner.com/r4/{tenant}"
    statement = FakeEhr("https://ehr.example.org").capability_statement()
    del statement["rest"][0]["security"]["extension"][0]["extension"][0]  # no authorize URL
    connection = EhrConnection(name="oracle", iss=iss, client_id="cc", vendor="oracle_health")
    with respx.mock() as mock:
        mock.get(f"{iss}/.well-known/smart-configuration").mock(return_value=httpx.Response(404))
        mock.get(f"{iss}/metadata").mock(return_value=httpx.Response(200, json=statement))
        (found,) = _discover(connection)
    assert found.authorization_endpoint == (
        f"https://authorization.cerner.com/tenants/{tenant}"
        "/protocols/oauth2/profiles/smart-v1/personas/provider/authorize"
    )
