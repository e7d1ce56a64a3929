"""``carecoord demo``: the whole product on a laptop, with a sandbox EHR to launch it from."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["demo"]


def demo(
    patients: Annotated[int, typer.Option(min=1, max=5000, help="Synthetic patients.")] = 40,
    port: Annotated[int, typer.Option(min=0, max=65535, help="CareCoord's port (0: any).")] = 8000,
    ehr_port: Annotated[
        int, typer.Option(min=0, max=65535, help="The sandbox EHR's port (0: any).")
    ] = 8001,
    folder: Annotated[
        Path | None, typer.Option(help="Folder for the database (default: a temporary one).")
    ] = None,
) -> None:
    """Run CareCoord with synthetic patients and a local SMART sandbox EHR (SQLite in a
    temporary folder; nothing is downloaded). Stop with Ctrl-C."""
    from carecoord.web.demo import start_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    where = folder or Path(tempfile.mkdtemp(prefix="carecoord-demo-"))
    where.mkdir(parents=True, exist_ok=True)
    typer.echo(f"Preparing the demo in {where} ...")
    servers = start_demo(where, patients=patients, port=port or None, ehr_port=ehr_port or None)
    s = servers.summary
    typer.echo(
        f"Ready in {servers.ready_seconds:.1f} s: {s.patients} patients, {s.stays} hospital stays "
        f"({s.discharges} discharges, checklists made by the discharge automation)."
    )
    typer.echo("")
    typer.echo(f"  Sandbox EHR (start here):   {servers.ehr_url}/")
    typer.echo("     launch CareCoord from a patient's row, as nurse case manager Kim Okafor")
    typer.echo(f"  PCP inbox (Dr Helen Marsh): {servers.ehr_url}/sign-in?user=demo-pcp-1")
    typer.echo(f"  Worklist (Kim Okafor):      {servers.ehr_url}/sign-in?user=demo-nurse-1")
    typer.echo(f"  Dashboard (supervisor):     {servers.ehr_url}/sign-in?user=demo-supervisor-1")
    typer.echo(f"  FHIR API:                   {servers.app_url}/fhir/metadata")
    typer.echo("")
    typer.echo("Press Ctrl-C to stop.")
    stop = threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        typer.echo("Stopping ...")
    finally:
        servers.stop()
