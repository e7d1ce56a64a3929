"""``carecoord sync run`` and ``carecoord sync status`` (in process, the fake EHR behind respx)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from carecoord.settings import Settings
from carecoord.sync.cli import sync_app
from tests.sync.conftest import CONNECTION, write_sync_config
from tests.sync.ehr_data import EXPECTED, seed
from tests.sync.fake_fhir import FakeFhir

pytestmark = pytest.mark.usefixtures("ehr_http", "engine")


def settings_file(settings: Settings, tmp_path: Path) -> Path:
    path = tmp_path / "carecoord.toml"
    values = {
        "database_url": settings.database_url,
        "data_dir": str(settings.data_dir),
        "config_dir": str(settings.config_dir),
        "keys_dir": str(settings.keys_dir),
        "secret_key": settings.secret_key.get_secret_value() if settings.secret_key else "",
        "log_level": "WARNING",
    }
    lines = ["[carecoord]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sync_run_and_status(
    fake: FakeFhir, connected: Settings, tmp_path: Path, engine: Engine
) -> None:
    seed(fake)
    config = settings_file(connected, tmp_path)
    runner = CliRunner()
    result = runner.invoke(
        sync_app, ["run", "--config", str(config), "-n", CONNECTION, "-p", "patients:p1,p2"]
    )
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and str(len(EXPECTED)) in result.output

    result = runner.invoke(sync_app, ["status", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    (status,) = json.loads(result.output)["connections"]
    assert status["connection"] == CONNECTION and status["last_success"] is not None

    result = runner.invoke(sync_app, ["status", "--config", str(config)])
    assert result.exit_code == 0 and CONNECTION in result.output and "closed" in result.output


def test_sync_run_uses_the_configured_populations_and_reports_failures(
    fake: FakeFhir, connected: Settings, tmp_path: Path
) -> None:
    seed(fake)
    write_sync_config(
        connected,
        "[defaults]\nmax_retries = 0\n\n[connections.test-ehr]\n"
        'populations = [{name = "pilot", patients = ["p1"]}]\n',
    )
    fake.failures = [httpx.Response(503)]
    config = settings_file(connected, tmp_path)
    result = CliRunner().invoke(sync_app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert "pilot" in result.output and "EhrServerError" in result.output
    result = CliRunner().invoke(sync_app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output


def test_sync_run_refuses_an_unknown_connection_or_population(
    connected: Settings, tmp_path: Path
) -> None:
    config = settings_file(connected, tmp_path)
    result = CliRunner().invoke(sync_app, ["run", "--config", str(config), "-n", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
    result = CliRunner().invoke(sync_app, ["run", "--config", str(config), "-p", "cohort:x"])
    assert result.exit_code == 2 and "population" in result.output


def test_a_bad_sync_config_names_file_and_field(connected: Settings, tmp_path: Path) -> None:
    path = write_sync_config(connected, "[defaults]\nmax_in_flight = 0\n")
    result = CliRunner().invoke(
        sync_app, ["status", "--config", str(settings_file(connected, tmp_path))]
    )
    assert result.exit_code == 2
    assert str(path) in result.output and "defaults.max_in_flight" in result.output
