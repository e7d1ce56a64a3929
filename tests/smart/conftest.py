"""Fixtures of the SMART client tests: settings in a temporary folder, our signing keys, a fake
EHR (respx or a real socket), and the application with the SMART routes installed."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete

from carecoord.app import create_app
from carecoord.settings import Settings
from carecoord.smart.keys import KeyStore
from carecoord.smart.routes import install
from carecoord.smart.tables import smart_launches, smart_sessions
from tests.smart.fake_ehr import FakeClient, FakeEhr, asgi_app

EHR_BASE = "https://ehr.example.org"
APP_BASE = "https://testserver"
SECRET_ENV = "CARECOORD_TEST_EHR_SECRET"
SECRET_VALUE = "s3cret-value-for-tests"


@pytest.fixture(scope="session")
def keys_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our RS384 and ES384 keys, generated once per run (copied for each test)."""
    folder = tmp_path_factory.mktemp("keys-template") / "keys"
    KeyStore(folder).generate()
    return folder


@pytest.fixture
def engine(migrated_engine: Engine) -> Engine:
    """The session's database with the SMART tables emptied (the only ones these tests write):
    much faster on PostgreSQL than truncating every table."""
    with migrated_engine.begin() as conn:
        conn.execute(delete(smart_sessions))
        conn.execute(delete(smart_launches))
    return migrated_engine


@pytest.fixture
def settings(database_url: str, tmp_path: Path, keys_template: Path) -> Settings:
    keys = tmp_path / "keys"
    shutil.copytree(keys_template, keys)
    return Settings(
        database_url=database_url,
        max_body_bytes=64 * 1024,
        data_dir=tmp_path / "data",
        config_dir=tmp_path / "config",
        keys_dir=keys,
        secret_key="test-secret-key-with-at-least-32-characters",
        audit_store_process=False,
    )


@pytest.fixture
def keystore(settings: Settings) -> KeyStore:
    return KeyStore(settings.effective_keys_dir)


def write_connection(settings: Settings, name: str, **fields: Any) -> Path:
    """A connection file config/ehr/NAME.toml with ``fields`` (strings and booleans)."""
    folder = settings.config_dir / "ehr"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, value in fields.items():
        rendered = ("true" if value else "false") if isinstance(value, bool) else f'"{value}"'
        lines.append(f"{key} = {rendered}")
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def register_clients(ehr: FakeEhr, keystore: KeyStore, redirect_uri: str) -> None:
    """Our apps at the fake EHR: public, confidential, private_key_jwt, and backend services."""
    uris = [redirect_uri]
    ehr.add_client(FakeClient("cc-public", "none", uris))
    ehr.add_client(FakeClient("cc-confidential", "client_secret_basic", uris, secret=SECRET_VALUE))
    ehr.add_client(FakeClient("cc-jwt", "private_key_jwt", uris, jwks=keystore.jwks()))
    ehr.add_client(
        FakeClient(
            "cc-backend",
            "private_key_jwt",
            jwks=keystore.jwks(),
            grant_types=("client_credentials",),
        )
    )


def configure_connections(settings: Settings, ehr: FakeEhr) -> None:
    """Connection files for the fake EHR: one per client authentication method."""
    write_connection(
        settings,
        "test-ehr",
        iss=ehr.fhir_base,
        client_id="cc-public",
        backend_client_id="cc-backend",
    )
    write_connection(
        settings,
        "test-ehr-secret",
        iss=ehr.fhir_base + "/secret",
        client_id="cc-confidential",
        client_auth="confidential",
        client_secret_env=SECRET_ENV,
    )
    write_connection(
        settings,
        "test-ehr-jwt",
        iss=ehr.fhir_base + "/jwt",
        client_id="cc-jwt",
        client_auth="private_key_jwt",
        signing_alg="RS384",
    )


@pytest.fixture
def ehr(keystore: KeyStore) -> FakeEhr:
    fake = FakeEhr(EHR_BASE)
    register_clients(fake, keystore, f"{APP_BASE}/auth/callback")
    return fake


@pytest.fixture
def ehr_http(ehr: FakeEhr) -> Iterator[respx.MockRouter]:
    """Every HTTP call to the fake EHR's host answered by the fake EHR (respx)."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="ehr.example.org").mock(side_effect=ehr.handle)
        yield mock


@pytest.fixture
def smart_app(
    settings: Settings, engine: Engine, ehr: FakeEhr, monkeypatch: pytest.MonkeyPatch
) -> FastAPI:
    monkeypatch.setenv(SECRET_ENV, SECRET_VALUE)
    configure_connections(settings, ehr)
    app = create_app(settings, engine=engine)
    install(app, settings, engine)
    return app


@pytest.fixture
def browser(smart_app: FastAPI, ehr_http: respx.MockRouter) -> Iterator[TestClient]:
    """The app in-process (https://testserver), redirects not followed, EHR calls mocked."""
    with TestClient(smart_app, base_url=APP_BASE, follow_redirects=False) as client:
        yield client


def launch(
    client: TestClient,
    ehr: FakeEhr,
    *,
    standalone: bool = False,
    connection: str = "test-ehr",
    iss: str | None = None,
) -> httpx.Response:
    """Drive a launch through the fake EHR's authorize endpoint; returns the callback answer."""
    if standalone:
        start = client.get("/login", params={"ehr": connection})
    else:
        start = client.get(
            "/launch", params={"iss": iss or ehr.fhir_base, "launch": ehr.new_launch()}
        )
    assert start.status_code == 302, start.text
    authorized = ehr.handle(httpx.Request("GET", start.headers["location"]))
    assert authorized.status_code == 302, authorized.text
    back = httpx.URL(authorized.headers["location"])
    return client.get(f"{back.path}?{back.query.decode()}")


# -- real sockets ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """An ASGI app under uvicorn on 127.0.0.1 in a named background thread."""

    def __init__(self, app: Any, port: int, name: str) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def stop(self) -> None:
        """Ask the server to stop without waiting (``__exit__`` waits)."""
        self.server.should_exit = True


@pytest.fixture
def live_ehr(keystore: KeyStore) -> Iterator[tuple[FakeEhr, int, ServerThread]]:
    """The fake EHR on a real socket; yields it, the port the app must use, and its server."""
    ehr_port, app_port = free_port(), free_port()
    fake = FakeEhr(f"http://127.0.0.1:{ehr_port}")
    register_clients(fake, keystore, f"http://127.0.0.1:{app_port}/auth/callback")
    with ServerThread(asgi_app(fake), ehr_port, "fake-ehr") as server:
        yield fake, app_port, server


@pytest.fixture
def live_app(
    settings: Settings,
    engine: Engine,
    live_ehr: tuple[FakeEhr, int, ServerThread],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, FakeEhr]]:
    """CareCoord with the SMART routes on a real socket, connected to the live fake EHR."""
    fake, port, ehr_server = live_ehr
    monkeypatch.setenv(SECRET_ENV, SECRET_VALUE)
    configure_connections(settings, fake)
    app = create_app(settings, engine=engine)
    install(app, settings, engine)
    with ServerThread(app, port, "carecoord-app") as server:
        yield server.url, fake
        ehr_server.stop()  # both servers wind down together
