"""Vendor profiles: scope spelling, signing algorithm, and each vendor's token quirks."""

from __future__ import annotations

import pytest

from carecoord.smart.connections import EhrConnection
from carecoord.smart.discovery import SmartConfiguration
from carecoord.smart.vendors import profile_for
from integrations.generic import scope_to_v1, scope_to_v2
from integrations.oracle_health import tenant_id

TENANT = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
CERNER_TOKEN = (
    f"https://authorization.cerner.com/tenants/{TENANT}/hosts/fhir-ehr-code.cerner.com"
    "/protocols/oauth2/profiles/smart-v1/token"
)


def _conn(vendor: str = "generic", **extra: object) -> EhrConnection:
    return EhrConnection(
        name="x",
        iss=f"https://fhir-ehr-code.cerner.com/r4/{TENANT}",
        client_id="c",
        vendor=vendor,
        **extra,  # type: ignore[arg-type]
    )


def _config(**extra: object) -> SmartConfiguration:
    return SmartConfiguration(token_endpoint=CERNER_TOKEN, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("v2", "v1"),
    [
        ("patient/Observation.rs", "patient/Observation.read"),
        ("user/*.cruds", "user/*.*"),
        ("system/Task.cud", "system/Task.write"),
        ("patient/Patient.r", "patient/Patient.read"),
        ("launch openid fhirUser", "launch openid fhirUser"),
    ],
)
def test_scope_spelling(v2: str, v1: str) -> None:
    assert scope_to_v1(v2) == v1
    if v2 not in ("patient/Patient.r",):
        assert scope_to_v2(v1) == (v2 if v2 != "system/Task.cud" else "system/Task.cud")


def test_restricted_v2_scopes_are_never_widened() -> None:
    scope = "patient/Observation.rs?category=laboratory"
    assert scope_to_v1(scope) == scope


def test_generic_follows_the_advertised_permissions() -> None:
    profile = profile_for("generic")
    conn = _conn()
    assert profile.scope(conn, "patient/*.rs", _config(capabilities=("permission-v1",))) == (
        "patient/*.read"
    )
    assert profile.scope(conn, "patient/*.read", _config(capabilities=("permission-v2",))) == (
        "patient/*.rs"
    )
    assert profile.scope(conn, "patient/*.rs", _config()) == "patient/*.rs"


def test_oracle_health_speaks_v1_unless_told_otherwise() -> None:
    profile = profile_for("oracle_health")
    conn = _conn("oracle_health")
    assert profile.scope(conn, "patient/*.rs", _config()) == "patient/*.read"
    caps = ("permission-v2",)
    assert profile.scope(conn, "patient/*.rs", _config(capabilities=caps)) == "patient/*.rs"


def test_oracle_health_system_accounts_use_the_tenant_token_url() -> None:
    profile = profile_for("oracle_health")
    assert profile.backend_token_url(_conn("oracle_health"), _config()) == (
        f"https://authorization.cerner.com/tenants/{TENANT}/protocols/oauth2/profiles/smart-v1/token"
    )
    assert profile_for("generic").backend_token_url(_conn(), _config()) == CERNER_TOKEN
    assert tenant_id(f"https://fhir-ehr.cerner.com/r4/{TENANT.upper()}") == TENANT
    assert tenant_id("https://fhir.example.org/r4") is None


def test_signing_algorithm_choice() -> None:
    assert profile_for("generic").signing_alg(_conn(), None) == "ES384"
    assert profile_for("epic").signing_alg(_conn("epic"), None) == "RS384"
    assert profile_for("oracle_health").signing_alg(_conn("oracle_health"), None) == "RS384"
    only_rs = _config(token_endpoint_auth_signing_alg_values_supported=("RS384",))
    assert profile_for("generic").signing_alg(_conn(), only_rs) == "RS384"
    chosen = _conn(signing_alg="ES384")
    assert profile_for("generic").signing_alg(chosen, only_rs) == "ES384"  # the connection decides


def test_backend_token_parameters() -> None:
    config = _config()
    assert profile_for("generic").backend_token_params(_conn(), config) == {"scope": "system/*.rs"}
    assert profile_for("epic").backend_token_params(_conn("epic"), config) == {}
    assert profile_for("oracle_health").backend_token_params(_conn("oracle_health"), config) == {
        "scope": "system/*.read"
    }
