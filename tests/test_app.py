"""The application shell: request ids, and no patient data in the logs."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carecoord.cli import app as cli_app
from tests.fhir.factories import patient


def test_every_response_has_a_request_id(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert len(response.headers["x-request-id"]) == 32
    given = client.get("/healthz", headers={"x-request-id": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"


def test_logs_carry_no_patient_data(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = patient(family="Zyxwvutsrq", given="Quintessa")
    created = client.post(
        "/fhir/Patient", json=body, headers={"content-type": "application/fhir+json"}
    )
    pid = created.json()["id"]
    client.get(f"/fhir/Patient/{pid}")
    client.get("/fhir/Patient?family=Zyxwvutsrq&birthdate=1974-12-25")
    client.get("/fhir/Patient?family=Zyxwvutsrq&nonsense=Quintessa")
    client.post(
        "/fhir/Patient",
        content=b'{"resourceType":"Patient","name":[{"family":"Zyxwvutsrq"',
        headers={"content-type": "application/fhir+json"},
    )
    # Server-side records only: httpx's client log belongs to the test client making the calls.
    text = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "GET /fhir/{res_type}/{res_id} 200" in text  # the access log is there ...
    for secret in ("Zyxwvutsrq", "Quintessa", "1974-12-25", pid):
        assert secret not in text  # ... but names no patient


def test_service_logging_silences_url_logging_of_http_clients() -> None:
    from carecoord.cli import _configure_logging

    _configure_logging("DEBUG")
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


def test_client_hanging_up_mid_body_is_not_an_error(
    settings: object, engine: object, api_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    from carecoord.app import create_app

    app = create_app(settings, engine=engine)  # type: ignore[arg-type]
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/fhir/Patient",
        "raw_path": b"/fhir/Patient",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/fhir+json"),
            (b"content-length", b"500"),
            (b"authorization", f"Bearer {api_token}".encode()),
        ],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_serve_keeps_start_up_objects_out_of_full_collections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`carecoord serve` freezes what start-up built before it serves, so the collector's full
    passes no longer walk it (they paused the event loop for 150-270 ms under load)."""
    import uvicorn

    seen: dict[str, int] = {}

    def run(app: object, **kwargs: object) -> None:
        seen["frozen"] = gc.get_freeze_count()

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setenv("CARECOORD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CARECOORD_DATABASE_URL", f"sqlite:///{tmp_path / 'cc.db'}")
    try:
        result = CliRunner().invoke(cli_app, ["serve", "--port", "8799"])
        assert result.exit_code == 0, result.output
        assert seen["frozen"] > 50_000  # the modules, models and app, not a handful
    finally:
        gc.unfreeze()
