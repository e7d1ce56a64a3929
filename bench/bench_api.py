"""HTTP API benchmark: validated create, read vs empty endpoint, mixed CRUD.

    python bench/bench_api.py --db sqlite|postgres [--port 8765] [--scale 1.0]

Starts ``carecoord serve`` pinned to core 0 on a fresh database, drives it from core 1 with
``bench/http_load.py`` (httpx) and, when installed, ``wrk`` (read and empty endpoint, whose rates a
Python client can saturate before the server does), stops it and prints a markdown table. Raw
results go to ``bench/results/api-<db>.json``. On PostgreSQL the database's processes are moved
to core 1 for the run (``database_off_server_core``), as a database on its own host would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
from common import (
    AUTH,
    CLIENT_CORE,
    FAMILIES,
    cpu_model,
    database,
    database_off_server_core,
    patient_bytes,
    pin_to_client_core,
    server,
)
from http_load import LoadResult, Op, run_load

FHIR_JSON = {"Content-Type": "application/fhir+json"}
RESULTS = Path(__file__).parent / "results"
CONNECTIONS = 32

Row = dict[str, Any]


def _row(name: str, tool: str, res: LoadResult, target: str, met: bool | None) -> Row:
    return {
        "test": name,
        "tool": tool,
        "requests": res.requests,
        "req_per_s": round(res.rate, 1),
        "p50_ms": round(res.p50, 2),
        "p99_ms": round(res.p99, 2),
        "errors": res.errors,
        "target": target,
        "met": met,
        "statuses": res.statuses,
        "error_samples": res.error_samples[:5],
        "per_op": res.summary()["per_op"],
    }


# -- wrk ---------------------------------------------------------------------------------------

_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d,"
    .. "\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk(base: str, lua: str, seconds: int, connections: int = CONNECTIONS) -> LoadResult:
    """Run wrk (1 thread, pinned to the client core) with a Lua script; parse its summary."""
    token = AUTH.get("Authorization", "")
    prelude = f'local auth = {{["Authorization"] = "{token}"}}\n'
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(prelude + lua + _WRK_DONE)
        script = f.name
    cmd = [
        "taskset", "-c", str(CLIENT_CORE), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        "--latency", "-s", script, base,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = proc.stdout + proc.stderr
    Path(script).unlink(missing_ok=True)
    res = LoadResult()
    res.error_samples = [
        f"wrk {line[7:]}" for line in out.splitlines() if line.startswith("WRKERR")
    ]
    m = re.search(r"WRKJSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    d = json.loads(m.group(1))
    res.requests = d["requests"]
    res.elapsed = d["duration_us"] / 1e6
    res.errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    # wrk reports percentiles only: store them as the two latencies the summary reads back.
    res.latencies = [d["p50_us"] / 1e6] * 50 + [d["p99_us"] / 1e6] * 49 + [d["p99_us"] / 1e6]
    return res


LUA_READ = """
math.randomseed(42)
request = function()
  return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)], auth)
end
"""
LUA_CREATE = """
local n = 0
local headers = {
  ["Content-Type"] = "application/fhir+json", ["Authorization"] = auth.Authorization
}
request = function()
  n = n + 1
  local body = (create_tpl:gsub("__FAM__", "Wrk" .. n):gsub("__MRN__", tostring(n)))
  return wrk.format("POST", "/fhir/Patient", headers, body)
end
"""

LUA_MIXED = """
local n = 0
local d = 0
local headers = {
  ["Content-Type"] = "application/fhir+json", ["Authorization"] = auth.Authorization
}
math.randomseed(43)
request = function()
  n = n + 1
  local k = n % 10
  if k < 4 then
    return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)], auth)
  elseif k < 6 then
    local body = (create_tpl:gsub("__FAM__", "Mix" .. n):gsub("__MRN__", "9" .. n))
    return wrk.format("POST", "/fhir/Patient", headers, body)
  elseif k < 8 then
    local id = ids[math.random(#ids)]
    return wrk.format("PUT", "/fhir/Patient/" .. id, headers, (update_tpl:gsub("__ID__", id)))
  elseif k == 8 then
    local family = fams[math.random(#fams)]
    return wrk.format("GET", "/fhir/Patient?family=" .. family .. "&_count=10", auth)
  end
  d = d + 1
  if d <= #dels then
    return wrk.format("DELETE", "/fhir/Patient/" .. dels[d], auth)
  end
  return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)] .. "/_history/1", auth)
end
local shown = 0
response = function(status, headers, body)
  if status >= 400 and shown < 5 then
    shown = shown + 1
    io.write("WRKERR " .. status .. " " .. string.sub(body, 1, 300) .. "\\n")
  end
end
"""


def _lua_str(name: str, value: str) -> str:
    return f"local {name} = [==[{value}]==]\n"


def _lua_list(name: str, values: list[str]) -> str:
    return f"local {name} = {{" + ",".join(f'"{v}"' for v in values) + "}\n"


def create_template() -> str:
    return patient_bytes(0, family="__FAM__").decode().replace("MRN-00000000", "MRN-__MRN__")


def update_template() -> str:
    return patient_bytes(777, res_id="__ID__").decode()


def collect_ids(base: str, limit: int) -> list[str]:
    """Ids of stored patients, by paging a search (the wrk create phase does not report them)."""
    ids: list[str] = []
    url: str | None = f"{base}/fhir/Patient?_count=1000&_elements=id"
    with httpx.Client(timeout=60, headers=AUTH) as c:
        while url and len(ids) < limit:
            bundle = c.get(url).raise_for_status().json()
            ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
            url = next(
                (lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"), None
            )
    return ids[:limit]


LUA_EMPTY = 'request = function() return wrk.format("GET", "/healthz", auth) end\n'


# -- scenarios ---------------------------------------------------------------------------------


async def create_phase(base: str, n: int, seconds: float) -> tuple[LoadResult, list[str]]:
    ids: list[str] = []
    bodies = [patient_bytes(i) for i in range(512)]

    def ops(i: int) -> tuple[str, Op]:
        body = bodies[i % len(bodies)]

        async def op(c: httpx.AsyncClient) -> httpx.Response:
            r = await c.post("/fhir/Patient", content=body, headers=FHIR_JSON)
            if r.status_code == 201:
                ids.append(r.json()["id"])
            return r

        return "create", op

    res = await run_load(
        base, ops, connections=CONNECTIONS, requests=n, duration=seconds, warmup=200
    )
    return res, ids


async def httpx_get(base: str, paths: list[str], n: int, seconds: float) -> LoadResult:
    rng = random.Random(7)

    def ops(_i: int) -> tuple[str, Op]:
        path = rng.choice(paths)
        return "GET", lambda c: c.get(path)

    return await run_load(
        base, ops, connections=CONNECTIONS, requests=n, duration=seconds, warmup=200
    )


async def mixed_phase(base: str, ids: list[str], n: int, seconds: float) -> LoadResult:
    """40% read, 20% create, 20% update, 10% search, 10% delete (of own creates) or vread."""
    rng = random.Random(11)
    # Reads/updates/vreads use a stable pool; deletes only remove patients this phase created.
    stable = ids[: max(1, len(ids) // 2)]
    deletable: list[str] = []
    plan = ["read"] * 4 + ["create"] * 2 + ["update"] * 2 + ["search", "delete"]
    counter = 10_000_000

    def ops(i: int) -> tuple[str, Op]:
        nonlocal counter
        kind = plan[i % len(plan)] if i >= 0 else "read"
        if kind == "delete" and not deletable:
            kind = "vread"
        if kind == "read":
            path = f"/fhir/Patient/{rng.choice(stable)}"
            return kind, lambda c: c.get(path)
        if kind == "vread":
            path = f"/fhir/Patient/{rng.choice(stable)}/_history/1"
            return kind, lambda c: c.get(path)
        if kind == "search":
            j = rng.randrange(512)
            params = {"family": f"{FAMILIES[j % len(FAMILIES)]}{j}", "_count": "10"}
            return kind, lambda c: c.get("/fhir/Patient", params=params)
        if kind == "delete":
            victim = deletable.pop()
            return kind, lambda c: c.delete(f"/fhir/Patient/{victim}")
        if kind == "update":
            rid = rng.choice(stable)
            counter += 1
            body = patient_bytes(counter, res_id=rid)
            return kind, lambda c: c.put(f"/fhir/Patient/{rid}", content=body, headers=FHIR_JSON)
        counter += 1
        body = patient_bytes(counter)

        async def create(c: httpx.AsyncClient) -> httpx.Response:
            r = await c.post("/fhir/Patient", content=body, headers=FHIR_JSON)
            if r.status_code == 201:
                deletable.append(r.json()["id"])
            return r

        return "create", create

    return await run_load(
        base, ops, connections=CONNECTIONS, requests=n, duration=seconds, warmup=100
    )


def run(db: str, port: int, scale: float) -> list[Row]:
    rows: list[Row] = []
    secs = max(5, int(15 * scale))
    with (
        database(db, "cc_bench_api") as url,
        database_off_server_core(db),
        server(url, port, RESULTS / f"server-{db}.log") as base,
    ):
        pin_to_client_core()
        # 1. validated create of a ~1.4 KB Patient
        size = len(patient_bytes(1))
        res, ids = asyncio.run(create_phase(base, int(15_000 * scale), secs))
        rows.append(
            _row(f"create Patient ({size} B JSON)", "httpx", res, ">= 1000/s", res.rate >= 1000)
        )
        print(json.dumps(rows[-1]), flush=True)
        have_wrk = shutil.which("wrk") is not None
        if have_wrk:
            res = wrk(base, _lua_str("create_tpl", create_template()) + LUA_CREATE, secs)
            rows.append(
                _row(f"create Patient ({size} B JSON)", "wrk", res, ">= 1000/s", res.rate >= 1000)
            )
            print(json.dumps(rows[-1]), flush=True)
            ids = collect_ids(base, 6000)
        assert ids, "no patient was created"

        # 2. read by id vs empty endpoint, 32 connections
        read_paths = [f"/fhir/Patient/{i}" for i in ids[:1000]]
        results: dict[str, LoadResult] = {}
        if have_wrk:
            results["empty-wrk"] = wrk(base, LUA_EMPTY, secs)
            results["read-wrk"] = wrk(base, _lua_list("ids", ids[:1000]) + LUA_READ, secs)
        results["empty-httpx"] = asyncio.run(httpx_get(base, ["/healthz"], 40_000, secs))
        results["read-httpx"] = asyncio.run(httpx_get(base, read_paths, 40_000, secs))
        for tool in ("wrk", "httpx"):
            if f"empty-{tool}" not in results:
                continue
            empty, read = results[f"empty-{tool}"], results[f"read-{tool}"]
            rows.append(_row("empty endpoint GET /healthz", tool, empty, "(reference)", None))
            ratio = read.rate / empty.rate if empty.rate else 0.0
            met = ratio >= 0.8 and read.p99 <= 15
            rows.append(
                _row(
                    f"read Patient by id ({ratio:.2f} x empty)",
                    tool,
                    read,
                    ">= 0.8 x empty, p99 <= 15 ms",
                    met,
                )
            )
            print(json.dumps(rows[-2]), json.dumps(rows[-1]), sep="\n", flush=True)

        # 3. mixed CRUD
        if have_wrk:
            half = len(ids) // 2
            lua = (
                _lua_list("ids", ids[: min(half, 1000)])
                + _lua_list("dels", ids[half:])
                + _lua_list("fams", [f"Wrk{i}" for i in range(1, 2000)])
                + _lua_str("create_tpl", create_template())
                + _lua_str("update_tpl", update_template())
                + LUA_MIXED
            )
            res = wrk(base, lua, secs)
            rows.append(
                _row(
                    "mixed CRUD 40r/20c/20u/10s/10d-or-vread",
                    "wrk",
                    res,
                    ">= 700/s",
                    res.rate >= 700,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
        res = asyncio.run(mixed_phase(base, ids, int(20_000 * scale), secs))
        rows.append(
            _row(
                "mixed CRUD 40r/20c/20u/10s/10d-or-vread",
                "httpx",
                res,
                ">= 700/s",
                res.rate >= 700,
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(db: str, rows: list[Row]) -> str:
    lines = [
        f"API benchmark, {db}, {CONNECTIONS} connections, server on 1 core ({cpu_model()})",
        "",
        "| test | tool | requests | req/s | p50 ms | p99 ms | errors | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['test']} | {r['tool']} | {r['requests']} | {r['req_per_s']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['target']} | {met} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply request counts/time")
    args = parser.parse_args()
    rows = run(args.db, args.port, args.scale)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"api-{args.db}.json").write_text(json.dumps(rows, indent=2, default=str))
    print()
    print(markdown(args.db, rows))
    for r in rows:
        for sample in r["error_samples"]:
            print("error:", r["test"], sample)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
