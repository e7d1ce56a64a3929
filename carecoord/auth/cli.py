"""``carecoord clients``: register the system clients that may call the API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import orjson
import typer
from joserfc.jwk import ECKey
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from carecoord.settings import Settings

__all__ = ["clients_app"]

clients_app = typer.Typer(
    help="System clients of the API (SMART backend services).", no_args_is_help=True
)
console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


def _engine(config: Path | None) -> tuple[Settings, Engine]:
    from carecoord.cli import _migrate, _settings
    from carecoord.db import make_engine

    settings = _settings(config)
    _migrate(settings)
    return settings, make_engine(settings.effective_database_url)


@clients_app.command("add")
def add(
    client_id: Annotated[str, typer.Argument(help="The client id (the JWT assertion's iss/sub).")],
    scope: Annotated[str, typer.Option(help="Granted system/ scopes, space separated.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    jwks_url: Annotated[str | None, typer.Option(help="URL of the client's public JWKS.")] = None,
    jwks_file: Annotated[
        Path | None, typer.Option(help="File with the client's public JWKS.", exists=True)
    ] = None,
    generate_key: Annotated[
        Path | None,
        typer.Option(help="Generate an ES384 key pair; write the private JWK here (mode 0600)."),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Organisation whose data it may see.")] = None,
    config: ConfigOption = None,
) -> None:
    """Register a client that authenticates with private_key_jwt."""
    from carecoord.auth.clients import ClientExists, add_client

    given = [x for x in (jwks_url, jwks_file, generate_key) if x is not None]
    if len(given) != 1:
        console.print("[red]give exactly one of --jwks-url, --jwks-file or --generate-key[/red]")
        raise typer.Exit(2)
    jwks = None
    if jwks_file is not None:
        try:
            jwks = orjson.loads(jwks_file.read_bytes())
        except orjson.JSONDecodeError as exc:
            console.print(f"[red]{jwks_file}: not valid JSON: {exc}[/red]")
            raise typer.Exit(2) from exc
    if generate_key is not None:
        if generate_key.exists():
            console.print(f"[red]{generate_key} exists; not overwriting a key[/red]")
            raise typer.Exit(2)
        key = ECKey.generate_key("P-384", parameters={"alg": "ES384", "use": "sig"})
        key.ensure_kid()
        fd = os.open(generate_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(key.as_dict(private=True)))
        jwks = {"keys": [key.as_dict(private=False)]}
    _, engine = _engine(config)
    try:
        client = add_client(
            engine,
            client_id=client_id,
            name=name or client_id,
            scope=scope,
            jwks_url=jwks_url,
            jwks=jwks,
            tenant=tenant,
        )
    except (ValueError, ClientExists) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    console.print(f"registered [bold]{client.client_id}[/bold] with scope {client.scope}")


@clients_app.command("list")
def list_(config: ConfigOption = None) -> None:
    """Registered clients."""
    from carecoord.auth.clients import list_clients

    _, engine = _engine(config)
    try:
        rows = list_clients(engine)
    finally:
        engine.dispose()
    table = Table()
    for column in ("client id", "name", "scope", "keys", "tenant", "status"):
        table.add_column(column)
    for c in rows:
        keys = c.jwks_url or f"{len((c.jwks or {}).get('keys', []))} inline key(s)"
        status = "disabled" if c.disabled else "active"
        table.add_row(c.client_id, c.name, c.scope, keys, c.tenant or "", status)
    Console().print(table)


@clients_app.command("remove")
def remove(client_id: str, config: ConfigOption = None) -> None:
    """Unregister a client (its tokens stop working when they expire, within minutes)."""
    from carecoord.auth.clients import remove_client

    _, engine = _engine(config)
    try:
        removed = remove_client(engine, client_id)
    finally:
        engine.dispose()
    if not removed:
        console.print(f"[red]no client {client_id!r}[/red]")
        raise typer.Exit(1)
    console.print(f"removed {client_id}")


@clients_app.command("token")
def token(
    client_id: str,
    key: Annotated[Path, typer.Option(help="The client's private JWK file.", exists=True)],
    scope: Annotated[str, typer.Option(help="Scopes to request.")] = "system/*.rs",
    config: ConfigOption = None,
) -> None:
    """Print an access token for a registered client (for trying the API with curl)."""
    import time
    import uuid

    from joserfc import jwt
    from joserfc.jwk import KeySet

    from carecoord.auth import AuthError
    from carecoord.auth.server import ASSERTION_TYPE, TokenService
    from carecoord.crypto import load_secret_key

    settings, engine = _engine(config)
    base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    token_url = f"{base}/auth/token"
    private = KeySet.import_key_set({"keys": [orjson.loads(key.read_bytes())]}).keys[0]
    alg = "ES384" if private.key_type == "EC" else "RS384"
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode(
        {"alg": alg, "kid": private.kid, "typ": "JWT"}, claims, private, algorithms=[alg]
    )
    service = TokenService(engine, load_secret_key(settings), ttl=settings.access_token_ttl_seconds)
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    try:
        answer = service.token_request(form, token_url=token_url, issuer=base)
    except AuthError as exc:
        console.print(f"[red]{exc.error}: {exc.description}[/red]")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(answer["access_token"])
