"""Shared fixtures: one migrated database per session (SQLite, or PostgreSQL when
CARECOORD_TEST_DATABASE_URL is set), emptied before every test that uses it."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from carecoord.app import create_app
from carecoord.audit.journal import settle_all
from carecoord.db import make_engine
from carecoord.fhir.store import FhirStore
from carecoord.migrate import upgrade
from carecoord.settings import Settings
from tests.auth.helpers import bearer, issue_token

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-r4"


_TABLES: dict[int, list[str]] = {}


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server_url = os.environ.get("CARECOORD_TEST_DATABASE_URL")
    if not server_url:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'carecoord.db'}"
        return
    name = f"carecoord_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def migrated_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=10)
    upgrade(engine)  # the real migrations, never create_all
    yield engine
    engine.dispose()


@pytest.fixture
def engine(migrated_engine: Engine) -> Engine:
    """The session's engine with every table emptied."""
    settle_all()  # audit journals of earlier tests' apps store nothing into this test's data
    tables = _TABLES.get(id(migrated_engine))
    if tables is None:
        names = inspect(migrated_engine).get_table_names()
        tables = _TABLES[id(migrated_engine)] = [t for t in names if t != "alembic_version"]
    with migrated_engine.begin() as conn:
        if migrated_engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    return migrated_engine


@pytest.fixture
def store(engine: Engine) -> FhirStore:
    return FhirStore(engine)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        max_body_bytes=64 * 1024,
        data_dir=tmp_path / "data",
        secret_key="test-secret-key-0123456789abcdef-0123456789",
        run_worker_in_process=False,  # tests drive workers themselves
        audit_store_process=False,  # the journal's own tests cover the storing process
    )


@pytest.fixture
def api_token(engine: Engine, settings: Settings) -> str:
    """An access token of a registered system client with ``system/*.cruds``."""
    return issue_token(engine, settings, "system/*.cruds", client_id="test-system")


@pytest.fixture
def auth_header(api_token: str) -> dict[str, str]:
    return bearer(api_token)


@pytest.fixture
def client(settings: Settings, engine: Engine, auth_header: dict[str, str]) -> Iterator[TestClient]:
    """The app with a system client's token on every request."""
    app = create_app(settings, engine=engine)
    with TestClient(app, base_url="http://testserver", headers=auth_header) as c:
        yield c


@pytest.fixture
def anonymous_client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The app with no credentials."""
    with TestClient(create_app(settings, engine=engine), base_url="http://testserver") as c:
        yield c


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(settings: Settings, engine: Engine) -> Iterator[str]:
    """The app on a real socket (127.0.0.1) in a background thread; yields its base URL."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def synthea_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/synthea-r4 is not present")
    return SHARED_DATA
