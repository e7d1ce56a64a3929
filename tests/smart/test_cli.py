"""``carecoord ehr ...`` and ``carecoord keys ...`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from carecoord.settings import Settings
from carecoord.smart.cli import ehr_app, keys_app
from carecoord.smart.connections import load_connections
from tests.smart.conftest import SECRET_ENV, configure_connections
from tests.smart.fake_ehr import FakeEhr

runner = CliRunner()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("CARECOORD_CONFIG_FILE", raising=False)
    monkeypatch.setenv("CARECOORD_CONFIG_DIR", str(settings.config_dir))
    monkeypatch.setenv("CARECOORD_KEYS_DIR", str(settings.effective_keys_dir))
    monkeypatch.setenv("CARECOORD_DATA_DIR", str(settings.data_dir))
    return settings


def test_add_list_show(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(
        ehr_app,
        [
            "add",
            "epic-prod",
            "--iss",
            "https://fhir.example.org/api/FHIR/R4",
            "--client-id",
            "abc",
            "--vendor",
            "epic",
            "--client-auth",
            "confidential",
            "--client-secret-env",
            "CC_EPIC_SECRET",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (env.config_dir / "ehr" / "epic-prod.toml").exists()
    conn = load_connections(env.config_dir, check_secrets=False).get("epic-prod")
    assert conn.vendor == "epic" and conn.client_secret_env == "CC_EPIC_SECRET"

    again = runner.invoke(
        ehr_app, ["add", "epic-prod", "--iss", "https://other.example.org/fhir", "--client-id", "x"]
    )
    assert again.exit_code == 2 and "already exists" in again.output

    listed = runner.invoke(ehr_app, ["list"])
    assert listed.exit_code == 0 and "epic-prod" in listed.output

    monkeypatch.setenv("CC_EPIC_SECRET", "super-secret-value")
    shown = runner.invoke(ehr_app, ["show", "epic-prod"])
    assert shown.exit_code == 0
    assert "CC_EPIC_SECRET" in shown.output and "value hidden" in shown.output
    assert "super-secret-value" not in shown.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iss", "http://fhir.example.org/fhir", "--client-id", "a"], "iss"),
        (["--iss", "https://f.example.org/fhir", "--client-id", "a", "--vendor", "x"], "vendor"),
        (
            [
                "--iss",
                "https://f.example.org/fhir",
                "--client-id",
                "a",
                "--backend-scope",
                "system/*.cruds",
            ],
            "read_only",
        ),
    ],
)
def test_add_refuses_invalid_connections(env: Settings, args: list[str], message: str) -> None:
    result = runner.invoke(ehr_app, ["add", "bad", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (env.config_dir / "ehr" / "bad.toml").exists()


def test_show_unknown(env: Settings) -> None:
    result = runner.invoke(ehr_app, ["show", "nope"])
    assert result.exit_code == 2 and "no EHR connection" in result.output


def test_list_empty_and_broken_config(env: Settings) -> None:
    assert "no EHR connections" in runner.invoke(ehr_app, ["list"]).output
    (env.config_dir / "ehr").mkdir(parents=True)
    (env.config_dir / "ehr" / "bad.toml").write_text('iss = "https://x.example.org"\n')
    result = runner.invoke(ehr_app, ["list"])
    assert result.exit_code == 2
    assert "bad.toml: client_id" in result.output


def test_ehr_test_reports_what_works(
    env: Settings, ehr: FakeEhr, ehr_http: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "x")
    configure_connections(env, ehr)
    result = runner.invoke(ehr_app, ["test", "test-ehr"])
    assert result.exit_code == 0, result.output
    for check in ("discovery", "token endpoint", "backend token", "GET metadata"):
        assert check in result.output
    assert "FAIL" not in result.output
    assert ehr.token_forms[-1]["grant_type"] == "client_credentials"
    assert ehr.tokens  # a token was issued ...
    assert not any(t in result.output for t in ehr.tokens)  # ... and never printed


def test_ehr_test_reports_failures(
    env: Settings, ehr: FakeEhr, ehr_http: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "x")
    configure_connections(env, ehr)
    ehr.token_failure = httpx.Response(400, json={"error": "invalid_client"})
    result = runner.invoke(ehr_app, ["test", "test-ehr"])
    assert result.exit_code == 1
    assert "invalid_client" in result.output and "FAIL" in result.output
    ehr_http.route(host="ehr.example.org").mock(return_value=httpx.Response(404))
    result = runner.invoke(ehr_app, ["test", "test-ehr"])
    assert result.exit_code == 1 and "discovery" in result.output


def test_keys_generate_and_rotate(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Path(settings.data_dir) / "fresh-keys"
    monkeypatch.setenv("CARECOORD_KEYS_DIR", str(keys))
    monkeypatch.setenv("CARECOORD_DATA_DIR", str(settings.data_dir))
    result = runner.invoke(keys_app, ["generate"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((keys / "keys.json").read_text())
    first = {k["kid"] for k in manifest["keys"]}
    assert len(first) == 2
    result = runner.invoke(keys_app, ["rotate", "--grace-hours", "24", "--alg", "ES384"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((keys / "keys.json").read_text())
    assert first < {k["kid"] for k in manifest["keys"]}
    statuses = sorted((k["alg"], k["status"]) for k in manifest["keys"])
    assert statuses == [("ES384", "active"), ("ES384", "retired"), ("RS384", "active")]
    assert "retired" in runner.invoke(keys_app, ["list"]).output
    assert runner.invoke(keys_app, ["generate", "--alg", "HS256"]).exit_code == 2
