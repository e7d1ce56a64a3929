"""``carecoord mllp``: receive HL7 v2 ADT messages over MLLP and acknowledge each once stored."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from carecoord.events.mllp import DEFAULT_MAX_FRAME_BYTES, MllpListener

if TYPE_CHECKING:
    from carecoord.events.adt import AdtIntake

__all__ = ["mllp"]

console = Console(stderr=True)

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise typer.BadParameter("letters, digits, '.', '_' or '-' (at most 64)")
    return value


def mllp(
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    name: Annotated[
        str,
        typer.Option(
            help="Listener name: events are recorded as source mllp:NAME.", callback=_name
        ),
    ] = "adt",
    feed_config: Annotated[
        Path | None,
        typer.Option(
            "--feed-config",
            help="Feed TOML (identifier systems, time zone, versions); default: "
            "CONFIG_DIR/hl7v2/feed.toml when it exists.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    max_frame_bytes: Annotated[
        int, typer.Option(help="Largest message accepted (bytes).", min=1024)
    ] = DEFAULT_MAX_FRAME_BYTES,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
        ),
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Create or upgrade the database first.")] = True,
) -> None:
    """Receive HL7 v2 ADT (A01 A02 A03 A04 A08 A11 A13) over MLLP; ACK each once stored."""
    from carecoord.cli import _configure_logging, _migrate, _settings
    from carecoord.db import make_engine
    from carecoord.events.adt import AdtIntake
    from carecoord.fhir.store import FhirStore
    from integrations.hl7v2 import FeedConfig, FeedConfigError, load_feed_config

    settings = _settings(config)
    _configure_logging(settings.log_level)
    path = feed_config
    if path is None and (settings.config_dir / "hl7v2" / "feed.toml").is_file():
        path = settings.config_dir / "hl7v2" / "feed.toml"
    try:
        feed = load_feed_config(path) if path is not None else FeedConfig()
    except FeedConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if migrate:
        _migrate(settings)
    engine = make_engine(settings.effective_database_url, pool_size=settings.db_pool_size)
    store = FhirStore(engine, retries=settings.write_retries)
    intake = AdtIntake(store, source=f"mllp:{name}", config=feed)
    console.print(f"MLLP listener mllp:{name} on {host}:{port} (Ctrl-C stops)")
    try:
        asyncio.run(_listen(intake, host=host, port=port, max_frame_bytes=max_frame_bytes))
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()


async def _listen(intake: AdtIntake, *, host: str, port: int, max_frame_bytes: int) -> None:
    """Serve until SIGTERM or Ctrl-C; running handlers finish, open connections close."""
    listener = MllpListener(
        lambda raw: intake.handle(raw).ack,
        too_large=intake.too_large,
        host=host,
        port=port,
        max_frame_bytes=max_frame_bytes,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with listener:
        await stop.wait()
