"""The demo (CareCoord + sandbox EHR on real sockets) once per module, and a headless Chromium."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from carecoord.web.demo import DemoServers, start_demo

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


def _empty(database_url: str) -> None:
    """Other modules' leftovers out of the shared test database (the demo loads its own data)."""
    engine = create_engine(database_url)
    try:
        names = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                if names:
                    conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
            else:
                for name in names:
                    conn.execute(text(f"DELETE FROM {name}"))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, migrated_engine: Any
) -> Iterator[DemoServers]:
    """``carecoord demo`` as the tests' server: SQLite in a temporary folder (or the session's
    PostgreSQL database when CARECOORD_TEST_DATABASE_URL is set)."""
    _empty(database_url)
    folder = tmp_path_factory.mktemp("demo")
    url = None if database_url.startswith("sqlite") else database_url
    servers = start_demo(folder, patients=40, database_url=url)
    yield servers
    servers.stop()
    _empty(database_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test; a screenshot when it ends."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / f"{request.node.name}.png"
    with contextlib.suppress(Exception):  # a failed screenshot must not hide the test's result
        page.screenshot(path=str(shot), full_page=True)
    context.close()
