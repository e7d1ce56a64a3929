"""Backend services: the client assertion's claims, token caching, 401 handling, token endpoint
errors, and vendor differences, with sync and async httpx clients."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import respx
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from carecoord.smart.backend import BackendAuth, TokenCache
from carecoord.smart.client_auth import ASSERTION_TYPE
from carecoord.smart.connections import EhrConnection
from carecoord.smart.discovery import SmartConfiguration
from carecoord.smart.errors import EhrAccessError, KeyStoreError, TokenRejected
from carecoord.smart.keys import KeyStore
from tests.smart.fake_ehr import FakeEhr

TOKEN_URL = "https://ehr.example.org/oauth/token"


def _connection(**extra: object) -> EhrConnection:
    values: dict[str, object] = {
        "name": "test-ehr",
        "iss": "https://ehr.example.org/fhir",
        "client_id": "cc-public",
        "backend_client_id": "cc-backend",
        **extra,
    }
    return EhrConnection(**values)  # type: ignore[arg-type]


def _configuration(ehr: FakeEhr) -> SmartConfiguration:
    return SmartConfiguration(**ehr.smart_configuration_body())


def _auth(ehr: FakeEhr, keystore: KeyStore, **extra: object) -> BackendAuth:
    return BackendAuth(_connection(**extra), _configuration(ehr), keystore)


def _assertions(ehr: FakeEhr) -> list[str]:
    return [f["client_assertion"] for f in ehr.token_forms if "client_assertion" in f]


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_assertion_claims(
    ehr: FakeEhr, ehr_http: respx.MockRouter, keystore: KeyStore, alg: str
) -> None:
    auth = _auth(ehr, keystore, signing_alg=alg)
    with httpx.Client(auth=auth) as client:
        started = time.time()
        for _ in range(3):
            auth.cache.clear()
            assert client.get(f"{ehr.fhir_base}/metadata").status_code == 200
    forms = [f for f in ehr.token_forms if f.get("grant_type") == "client_credentials"]
    assert len(forms) == 3
    assert all(f["client_assertion_type"] == ASSERTION_TYPE for f in forms)
    assert all(f["scope"] == "system/*.rs" for f in forms)
    jwks = KeySet.import_key_set(keystore.jwks())
    published = {k["kid"]: k for k in keystore.jwks()["keys"]}
    jtis = set()
    for assertion in _assertions(ehr):
        token = jwt.decode(assertion, jwks, algorithms=[alg])  # signature checks out
        header, claims = token.header, token.claims
        assert header["alg"] == alg and header["typ"] == "JWT"
        assert header["kid"] in published and published[header["kid"]]["alg"] == alg
        assert claims["iss"] == claims["sub"] == "cc-backend"
        assert claims["aud"] == TOKEN_URL
        assert claims["exp"] - started <= 300 + 1
        assert claims["exp"] > started
        jtis.add(claims["jti"])
    assert len(jtis) == 3  # a new jti every time
    assert len(ehr.seen_jti) == 3  # and the EHR accepted each


def test_token_is_cached_until_shortly_before_expiry(ehr: FakeEhr, keystore: KeyStore) -> None:
    now = [time.time()]
    auth = BackendAuth(_connection(), _configuration(ehr), keystore, clock=lambda: now[0])
    with respx.mock() as mock:
        token = mock.post(TOKEN_URL).mock(
            return_value=httpx.Response(
                200, json={"access_token": "at", "token_type": "bearer", "expires_in": 300}
            )
        )
        mock.get(f"{ehr.fhir_base}/metadata").mock(return_value=httpx.Response(200))
        with httpx.Client(auth=auth) as client:
            client.get(f"{ehr.fhir_base}/metadata")
            client.get(f"{ehr.fhir_base}/metadata")
            assert token.call_count == 1
            now[0] += 300 - 80  # still more than a minute left
            client.get(f"{ehr.fhir_base}/metadata")
            assert token.call_count == 1
            now[0] += 30  # less than a minute left: replaced
            client.get(f"{ehr.fhir_base}/metadata")
            assert token.call_count == 2


def test_bearer_is_sent(ehr: FakeEhr, ehr_http: respx.MockRouter, keystore: KeyStore) -> None:
    with httpx.Client(auth=_auth(ehr, keystore)) as client:
        client.get(f"{ehr.fhir_base}/metadata")
    sent = [c.request for c in ehr_http.calls if c.request.url.path.endswith("/metadata")]
    token = sent[0].headers["authorization"].removeprefix("Bearer ")
    assert token in ehr.tokens


def test_401_fetches_a_new_token_once_then_gives_up(ehr: FakeEhr, keystore: KeyStore) -> None:
    auth = _auth(ehr, keystore)
    answers = iter([httpx.Response(401), httpx.Response(200, json={"resourceType": "Patient"})])
    with respx.mock(assert_all_called=False) as mock:
        mock.route(url=f"{ehr.fhir_base}/Patient/1").mock(side_effect=lambda _: next(answers))
        mock.route(url=f"{ehr.fhir_base}/Patient/2").mock(return_value=httpx.Response(401))
        mock.route(host="ehr.example.org").mock(side_effect=ehr.handle)
        with httpx.Client(auth=auth) as client:
            assert client.get(f"{ehr.fhir_base}/Patient/1").status_code == 200
            assert len(_assertions(ehr)) == 2  # the first token, and one after the 401
            with pytest.raises(EhrAccessError, match="401"):
                client.get(f"{ehr.fhir_base}/Patient/2")
        assert len(_assertions(ehr)) == 3  # one more token, then it gave up


def test_async_client(ehr: FakeEhr, ehr_http: respx.MockRouter, keystore: KeyStore) -> None:
    async def run() -> int:
        async with httpx.AsyncClient(auth=_auth(ehr, keystore)) as client:
            first = await client.get(f"{ehr.fhir_base}/metadata")
            await client.get(f"{ehr.fhir_base}/metadata")
            return first.status_code

    assert asyncio.run(run()) == 200
    assert len(_assertions(ehr)) == 1


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx.Response(400, json={"error": "invalid_client"}), TokenRejected),
        (httpx.Response(500), Exception),
    ],
)
def test_token_endpoint_errors(
    ehr: FakeEhr,
    ehr_http: respx.MockRouter,
    keystore: KeyStore,
    failure: httpx.Response,
    error: type[Exception],
) -> None:
    from carecoord.smart.errors import TokenError

    ehr.token_failure = failure
    with httpx.Client(auth=_auth(ehr, keystore)) as client, pytest.raises(TokenError) as caught:
        client.get(f"{ehr.fhir_base}/metadata")
    assert isinstance(caught.value, error)


def test_token_endpoint_timeout_surfaces_as_an_httpx_timeout(
    ehr: FakeEhr, ehr_http: respx.MockRouter, keystore: KeyStore
) -> None:
    ehr.token_failure = httpx.ReadTimeout("slow")
    with httpx.Client(auth=_auth(ehr, keystore)) as client, pytest.raises(httpx.TimeoutException):
        client.get(f"{ehr.fhir_base}/metadata")


def test_unknown_client_is_rejected_by_the_ehr(
    ehr: FakeEhr, ehr_http: respx.MockRouter, keystore: KeyStore
) -> None:
    auth = _auth(ehr, keystore, backend_client_id="nobody")
    with httpx.Client(auth=auth) as client, pytest.raises(TokenRejected) as caught:
        client.get(f"{ehr.fhir_base}/metadata")
    assert caught.value.error == "invalid_client"


def test_missing_keys_is_a_clear_error(
    ehr: FakeEhr, ehr_http: respx.MockRouter, tmp_path: object
) -> None:
    from pathlib import Path

    empty = KeyStore(Path(str(tmp_path)) / "no-keys")
    with (
        httpx.Client(auth=_auth(ehr, empty)) as client,
        pytest.raises(KeyStoreError, match="carecoord keys generate"),
    ):
        client.get(f"{ehr.fhir_base}/metadata")


def test_epic_sends_no_scope_and_signs_rs384(
    ehr: FakeEhr, ehr_http: respx.MockRouter, keystore: KeyStore
) -> None:
    with httpx.Client(auth=_auth(ehr, keystore, vendor="epic")) as client:
        client.get(f"{ehr.fhir_base}/metadata")
    form = ehr.token_forms[-1]
    assert "scope" not in form
    assert jws.extract_compact(form["client_assertion"].encode()).headers()["alg"] == "RS384"


def test_generic_profile_defaults_to_es384(
    ehr: FakeEhr, ehr_http: respx.MockRouter, keystore: KeyStore
) -> None:
    with httpx.Client(auth=_auth(ehr, keystore)) as client:
        client.get(f"{ehr.fhir_base}/metadata")
    header = jws.extract_compact(ehr.token_forms[-1]["client_assertion"].encode()).headers()
    assert header["alg"] == "ES384"


def test_token_cache_repr_hides_the_token() -> None:
    cache = TokenCache()
    cache.put("at-very-secret", 300, 0)
    assert "very-secret" not in repr(cache)


def test_backend_services_through_discovery(
    smart_app: object, ehr: FakeEhr, ehr_http: respx.MockRouter
) -> None:
    runtime = smart_app.state.smart  # type: ignore[attr-defined]
    connection = runtime.connections.get("test-ehr")

    async def run() -> int:
        auth = await runtime.backend.auth(connection)
        async with httpx.AsyncClient(auth=auth) as client:
            return (await client.get(f"{connection.iss}/metadata")).status_code

    assert asyncio.run(run()) == 200
    assert ehr.token_forms[-1]["grant_type"] == "client_credentials"
