"""Commands ``carecoord ehr add|list|show|test`` and ``carecoord keys generate|rotate|list``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from carecoord.settings import ConfigError, Settings, load_settings
from carecoord.smart.connections import (
    ConnectionRegistry,
    EhrConnection,
    SigningAlg,
    load_connections,
    write_connection,
)
from carecoord.smart.errors import SmartError
from carecoord.smart.keys import DEFAULT_GRACE_SECONDS, KeyInfo, KeyStore

__all__ = ["ehr_app", "keys_app"]

ehr_app = typer.Typer(help="EHR connections (config/ehr/).", no_args_is_help=True)
keys_app = typer.Typer(help="The service's signing keys and public JWKS.", no_args_is_help=True)

err = Console(stderr=True, soft_wrap=True)
out = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else CARECOORD_CONFIG_FILE).", exists=True
    ),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _registry(settings: Settings) -> ConnectionRegistry:
    try:
        return load_connections(settings.config_dir, check_secrets=False)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _connection(settings: Settings, name: str) -> tuple[ConnectionRegistry, EhrConnection]:
    registry = _registry(settings)
    if name not in registry:
        err.print(f"[red]no EHR connection named {name!r}[/red] (see `carecoord ehr list`)")
        raise typer.Exit(2)
    return registry, registry.get(name)


AlgOption = Annotated[list[str] | None, typer.Option(help="RS384 and/or ES384 (default both).")]

# -- ehr ------------------------------------------------------------------------------------------


@ehr_app.command("add")
def ehr_add(
    name: Annotated[str, typer.Argument(help="Short unique name, e.g. epic-prod.")],
    iss: Annotated[str, typer.Option(help="FHIR base URL of the EHR.")],
    client_id: Annotated[str, typer.Option(help="Client id registered at the EHR.")],
    client_auth: Annotated[
        str, typer.Option(help="public | confidential | private_key_jwt")
    ] = "public",
    client_secret_env: Annotated[
        str | None, typer.Option(help="Env variable holding the secret (confidential).")
    ] = None,
    vendor: Annotated[str, typer.Option(help="generic | epic | oracle_health")] = "generic",
    read_only: Annotated[
        bool, typer.Option("--read-only/--read-write", help="Read-only connection.")
    ] = True,
    launch_scope: Annotated[str | None, typer.Option(help="Scopes of an EHR launch.")] = None,
    standalone_scope: Annotated[
        str | None, typer.Option(help="Scopes of a standalone launch.")
    ] = None,
    backend_scope: Annotated[str | None, typer.Option(help="Backend-services scopes.")] = None,
    signing_alg: Annotated[str | None, typer.Option(help="RS384 | ES384")] = None,
    backend_client_id: Annotated[
        str | None, typer.Option(help="Client id of the backend-services app.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a connection: validates it and writes config/ehr/NAME.toml (never overwrites)."""
    settings = _settings(config)
    values: dict[str, Any] = {
        "name": name,
        "iss": iss,
        "client_id": client_id,
        "client_auth": client_auth,
        "client_secret_env": client_secret_env,
        "vendor": vendor,
        "read_only": read_only,
        "launch_scope": launch_scope,
        "standalone_scope": standalone_scope,
        "backend_scope": backend_scope,
        "signing_alg": signing_alg,
        "backend_client_id": backend_client_id,
    }
    try:
        connection = EhrConnection(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        for problem in exc.errors():
            field = ".".join(str(p) for p in problem["loc"]) or "(connection)"
            message = str(problem["msg"]).removeprefix("Value error, ")
            err.print(f"[red]invalid[/red] {field}: {message}")
        raise typer.Exit(2) from exc
    try:
        path = write_connection(settings.config_dir, connection)
    except ConfigError as exc:
        err.print(f"[red]not added:[/red] {exc}")
        raise typer.Exit(2) from exc
    out.print(f"added EHR connection {name!r}: {path}")


@ehr_app.command("list")
def ehr_list(config: ConfigOption = None) -> None:
    """List the configured connections."""
    settings = _settings(config)
    registry = _registry(settings)
    if not len(registry):
        out.print(f"no EHR connections in {settings.config_dir / 'ehr'}")
        return
    table = Table(title="EHR connections")
    for column in ("name", "vendor", "iss", "client auth", "access", "file"):
        table.add_column(column)
    for conn in registry:
        table.add_row(
            conn.name,
            conn.vendor,
            conn.iss,
            conn.client_auth,
            "read-only" if conn.read_only else "read-write",
            str(registry.source(conn.name) or ""),
        )
    out.print(table)


@ehr_app.command("show")
def ehr_show(
    name: Annotated[str, typer.Argument(help="Connection name.")], config: ConfigOption = None
) -> None:
    """Show one connection (secrets are never shown: only the name of their variable)."""
    settings = _settings(config)
    registry, conn = _connection(settings, name)
    table = Table(title=f"EHR connection {name!r}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in conn.redacted().items():
        shown = "" if value is None else str(value)
        if key == "client_secret_env" and value:
            shown = f"{value} ({'set' if os.environ.get(str(value)) else 'NOT SET'}; value hidden)"
        table.add_row(key, shown)
    table.add_row("file", str(registry.source(name) or ""))
    out.print(table)


async def _checks(settings: Settings, conn: EhrConnection) -> list[tuple[str, bool, str]]:
    from carecoord.smart.backend import BackendAuth
    from carecoord.smart.discovery import Discovery
    from carecoord.smart.runtime import new_http_client
    from carecoord.smart.tokens import parse_token_response

    rows: list[tuple[str, bool, str]] = []
    async with new_http_client() as http:
        registry = ConnectionRegistry({conn.name: conn})
        try:
            found = await Discovery(registry, lambda: http).get(conn)
        except SmartError as exc:
            rows.append(("discovery", False, str(exc)))
            return rows
        rows.append(("discovery", True, f"from {found.source}"))
        for label, url in (
            ("authorize endpoint", found.authorization_endpoint),
            ("token endpoint", found.token_endpoint),
            ("jwks_uri", found.jwks_uri),
        ):
            rows.append((label, url is not None, url or "not published"))
        auth: BackendAuth | None = None
        try:
            auth = BackendAuth(conn, found, KeyStore(settings.effective_keys_dir))
            response = await http.send(auth.token_request())
            token = parse_token_response(response)
            auth.cache.put(token.access_token.get_secret_value(), token.expires_in, time.time())
            rows.append(
                (
                    "backend token",
                    True,
                    f"{auth.token_url}: expires_in={token.expires_in} scope={token.scope or '-'}",
                )
            )
        except (SmartError, ConfigError, httpx.HTTPError) as exc:
            auth = None
            rows.append(("backend token", False, f"{type(exc).__name__}: {exc}"))
        try:
            metadata = await http.get(
                f"{conn.iss}/metadata", headers={"Accept": "application/fhir+json"}, auth=auth
            )
            ok = metadata.status_code == 200
            rows.append(("GET metadata", ok, f"{metadata.status_code}"))
        except (SmartError, httpx.HTTPError) as exc:
            rows.append(("GET metadata", False, f"{type(exc).__name__}: {exc}"))
    return rows


@ehr_app.command("test")
def ehr_test(
    name: Annotated[str, typer.Argument(help="Connection name.")], config: ConfigOption = None
) -> None:
    """Run discovery, a backend-services token request and GET metadata; exit 1 if any fails."""
    settings = _settings(config)
    _, conn = _connection(settings, name)
    rows = asyncio.run(_checks(settings, conn))
    table = Table(title=f"EHR connection {name!r}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for check, ok, detail in rows:
        table.add_row(check, "[green]ok[/green]" if ok else "[red]FAIL[/red]", detail)
    out.print(table)
    if not all(ok for _, ok, _ in rows) or len(rows) < 2:
        raise typer.Exit(1)


# -- keys -----------------------------------------------------------------------------------------


def _key_table(title: str, keys: list[KeyInfo]) -> Table:
    table = Table(title=title)
    for column in ("kid", "alg", "status", "created", "leaves JWKS"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.kid,
            key.alg,
            key.status,
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at)),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.expires_at)) if key.expires_at else "",
        )
    return table


@keys_app.command("generate")
def keys_generate(
    alg: AlgOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a signing key for each algorithm that has none (existing keys are kept)."""
    settings = _settings(config)
    algs = _algs(alg)
    store = KeyStore(settings.effective_keys_dir)
    try:
        created = store.generate(algs)
    except (SmartError, OSError) as exc:
        err.print(f"[red]keys not generated:[/red] {exc}")
        raise typer.Exit(1) from exc
    if not created:
        out.print(f"every algorithm already has an active key in {store.directory}")
    out.print(_key_table(f"Signing keys in {store.directory}", store.keys()))


@keys_app.command("rotate")
def keys_rotate(
    grace_hours: Annotated[
        float, typer.Option(help="Hours the old public keys stay in the JWKS.", min=0)
    ] = DEFAULT_GRACE_SECONDS / 3600,
    alg: AlgOption = None,
    config: ConfigOption = None,
) -> None:
    """New active keys; the old private keys are deleted, their public keys stay for a while."""
    settings = _settings(config)
    store = KeyStore(settings.effective_keys_dir)
    try:
        store.rotate(grace_seconds=int(grace_hours * 3600), algs=_algs(alg))
    except (SmartError, OSError) as exc:
        err.print(f"[red]keys not rotated:[/red] {exc}")
        raise typer.Exit(1) from exc
    out.print(_key_table(f"Signing keys in {store.directory}", store.keys()))


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List the keys (active, and retired ones still published)."""
    settings = _settings(config)
    store = KeyStore(settings.effective_keys_dir)
    try:
        keys = store.keys()
    except SmartError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    out.print(_key_table(f"Signing keys in {store.directory}", keys))


def _algs(values: list[str] | None) -> list[SigningAlg]:
    if not values:
        return ["RS384", "ES384"]
    algs: list[SigningAlg] = []
    for value in values:
        upper = value.upper()
        if upper == "RS384":
            algs.append("RS384")
        elif upper == "ES384":
            algs.append("ES384")
        else:
            err.print(f"[red]unknown algorithm {value!r}[/red]: use RS384 or ES384")
            raise typer.Exit(2)
    return algs
