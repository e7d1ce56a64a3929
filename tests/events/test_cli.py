"""``carecoord mllp``: settings, feed configuration and the listener it starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from carecoord.events import AdtIntake
from carecoord.events import cli as events_cli
from carecoord.events.cli import mllp


def app() -> typer.Typer:
    cli = typer.Typer()
    cli.command("mllp")(mllp)

    @cli.callback()
    def main() -> None:
        """CareCoord."""

    return cli


@pytest.fixture
def started(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> list[dict[str, Any]]:
    monkeypatch.setenv("CARECOORD_DATABASE_URL", database_url)
    monkeypatch.setenv("CARECOORD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CARECOORD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("CARECOORD_CONFIG_FILE", raising=False)
    calls: list[dict[str, Any]] = []

    async def listen(intake: AdtIntake, **kw: Any) -> None:
        calls.append({"intake": intake, **kw})

    monkeypatch.setattr(events_cli, "_listen", listen)
    return calls


def test_starts_a_listener_with_the_feed_config(
    started: list[dict[str, Any]], tmp_path: Path
) -> None:
    feed = tmp_path / "config" / "hl7v2" / "feed.toml"
    feed.parent.mkdir(parents=True)
    feed.write_text('default_timezone = "America/New_York"\n')
    result = CliRunner().invoke(app(), ["mllp", "--port", "2575", "--name", "east"])
    assert result.exit_code == 0, result.output
    (call,) = started
    assert (call["host"], call["port"]) == ("127.0.0.1", 2575)
    assert call["intake"].source == "mllp:east"
    assert call["intake"].config.default_timezone == "America/New_York"


def test_an_invalid_feed_config_names_the_file_and_field(
    started: list[dict[str, Any]], tmp_path: Path
) -> None:
    feed = tmp_path / "feed.toml"
    feed.write_text('default_timezone = "Mars/Olympus"\n')
    result = CliRunner().invoke(app(), ["mllp", "--port", "2575", "--feed-config", str(feed)])
    assert result.exit_code == 2
    assert "default_timezone" in result.output and "feed.toml" in result.output
    assert started == []


def test_port_is_required_and_names_are_checked(started: list[dict[str, Any]]) -> None:
    assert CliRunner().invoke(app(), ["mllp"]).exit_code == 2
    assert CliRunner().invoke(app(), ["mllp", "--port", "1", "--name", "a b"]).exit_code == 2
    assert started == []
