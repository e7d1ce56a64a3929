"""Shared helpers for the benchmarks: server process, databases, realistic Patient bodies."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

PG_ADMIN = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
SERVER_CORE = 0
CLIENT_CORE = 1
BENCH_DIR = Path("/tmp/bench")
#: The Authorization header of the benchmark's system client, set by :func:`server`.
AUTH: dict[str, str] = {}

FAMILIES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
]  # fmt: skip
GIVEN = ["Ana", "Ben", "Chloe", "Dmitri", "Eve", "Farah", "Goran", "Hiro", "Ines", "Jamal"]


def pin_to_client_core() -> None:
    """Run the load generator on the core the server does not use."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {CLIENT_CORE})


@contextlib.contextmanager
def database_off_server_core(kind: str) -> Iterator[None]:
    """PostgreSQL's processes run on the client core while a benchmark lasts, as a database on a
    host of its own would; otherwise its backends take turns with the server on the server's core.
    Restored afterwards. Needs the right to change their affinity (root); else left as they are."""
    if kind != "postgres" or not hasattr(os, "sched_setaffinity"):
        yield
        return
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout
    before: dict[int, set[int]] = {}
    for pid in (int(p) for p in out.split()):
        try:
            before[pid] = os.sched_getaffinity(pid)
            # Every thread of the process (backends are single-threaded; -a for safety).
            subprocess.run(["taskset", "-apc", str(CLIENT_CORE), str(pid)], capture_output=True)
        except OSError:
            continue
    try:
        yield
    finally:
        out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout
        every = ",".join(str(c) for c in sorted(set().union(*before.values()) or {0}))
        for pid in (int(p) for p in out.split()):
            subprocess.run(["taskset", "-apc", every, str(pid)], capture_output=True)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def patient(i: int, *, res_id: str | None = None, family: str | None = None) -> dict[str, Any]:
    """A realistic ~1.4 KB US Core-style Patient (identifiers, names, telecom, address, ext)."""
    fam = family or f"{FAMILIES[i % len(FAMILIES)]}{i}"
    given = GIVEN[i % len(GIVEN)]
    year = 1930 + i % 80
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
        },
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2106-3",
                            "display": "White",
                        },
                    },
                    {"url": "text", "valueString": "White"},
                ],
            },
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                "valueCode": "F" if i % 2 else "M",
            },
        ],
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "MR",
                            "display": "Medical Record Number",
                        }
                    ]
                },
                "system": "http://hospital.example.org/mrn",
                "value": f"MRN-{i:08d}",
            },
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}
                    ]
                },
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": f"999-{i % 100:02d}-{i % 10000:04d}",
            },
        ],
        "active": True,
        "name": [
            {"use": "official", "family": fam, "given": [given, "Q."], "prefix": ["Ms."]},
        ],
        "telecom": [
            {"system": "phone", "value": f"555-01{i % 100:02d}", "use": "home"},
            {"system": "phone", "value": f"555-02{i % 100:02d}", "use": "mobile"},
            {"system": "email", "value": f"{given.lower()}.{fam.lower()}@example.org"},
        ],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{year:04d}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "address": [
            {
                "use": "home",
                "line": [f"{100 + i % 900} Main Street", "Apt 4B"],
                "city": "Springfield",
                "district": "Hampden",
                "state": "MA",
                "postalCode": "01103",
                "country": "US",
            }
        ],
        "maritalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                    "code": "M",
                    "display": "Married",
                }
            ]
        },
    }
    if res_id is not None:
        body["id"] = res_id
    return body


def patient_bytes(i: int, **kw: Any) -> bytes:
    return orjson.dumps(patient(i, **kw))


def pg_create(db: str) -> str:
    subprocess.run([*PG_ADMIN, "-c", f"drop database if exists {db}"], check=True)
    subprocess.run([*PG_ADMIN, "-c", f"create database {db}"], check=True)
    return PG_URL.format(db=db)


def pg_drop(db: str) -> None:
    subprocess.run([*PG_ADMIN, "-c", f"drop database if exists {db} with (force)"], check=False)


def fresh_sqlite(name: str) -> str:
    folder = BENCH_DIR / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return f"sqlite:///{folder / 'cc.db'}"


@contextlib.contextmanager
def database(kind: str, name: str) -> Iterator[str]:
    """A fresh database URL of ``kind`` (sqlite|postgres), removed afterwards."""
    if kind == "sqlite":
        url = fresh_sqlite(name)
        try:
            yield url
        finally:
            shutil.rmtree(BENCH_DIR / name, ignore_errors=True)
    elif kind == "postgres":
        url = pg_create(name)
        try:
            yield url
        finally:
            pg_drop(name)
    else:
        raise SystemExit(f"unknown --db {kind!r}")


def bench_token(env: dict[str, str]) -> str:
    """Register a ``system/*.cruds`` client in the benchmark database and return its token."""
    key = BENCH_DIR / f"client-{os.getpid()}.jwk"
    key.unlink(missing_ok=True)
    client = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    base = ["carecoord", "clients"]
    subprocess.run(
        [*base, "add", client, "--scope", "system/*.cruds", "--generate-key", str(key)],
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*base, "token", client, "--key", str(key), "--scope", "system/*.cruds"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@contextlib.contextmanager
def server(url: str, port: int, log: Path) -> Iterator[str]:
    """Run ``carecoord serve`` pinned to core 0; yield its base URL once /healthz answers."""
    env = dict(
        os.environ,
        CARECOORD_DATABASE_URL=url,
        CARECOORD_LOG_LEVEL="WARNING",
        CARECOORD_DATA_DIR=str(BENCH_DIR / "data"),
        CARECOORD_ACCESS_TOKEN_TTL_SECONDS="3600",
        CARECOORD_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    AUTH.clear()
    AUTH["Authorization"] = "Bearer " + bench_token(env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), "carecoord", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not answer /healthz in 60 s; see {log}")
                time.sleep(0.2)
            yield base
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
