"""A small async HTTP/1.1 keep-alive load generator over loopback (httpx.AsyncClient).

``connections`` workers share one client whose pool holds exactly ``connections`` keep-alive
connections. The run stops after ``requests`` requests OR ``duration`` seconds, whichever comes
first, so it always terminates. Latency is measured per request (send to body read).

Library use::

    result = asyncio.run(run_load(base, ops, connections=32, requests=20_000, duration=20))

where ``ops(i)`` returns ``(name, coroutine_function)`` for request number ``i``; the coroutine
function receives the client and returns the response.

Command line (single URL, GET)::

    python bench/http_load.py http://127.0.0.1:8765/healthz -c 32 -n 20000 -d 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from common import AUTH

__all__ = ["LoadResult", "Op", "OpFactory", "check_loopback", "run_load"]

Op = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
OpFactory = Callable[[int], tuple[str, Op]]


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    per_op: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        """Percentile ``q`` (0-100) in milliseconds, nearest-rank."""
        if not values:
            return float("nan")
        ordered = sorted(values)
        k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[k] * 1000

    @property
    def p50(self) -> float:
        return self.pct(self.latencies, 50)

    @property
    def p99(self) -> float:
        return self.pct(self.latencies, 99)

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.elapsed, 2),
            "req_per_s": round(self.rate, 1),
            "p50_ms": round(self.p50, 2),
            "p99_ms": round(self.p99, 2),
            "mean_ms": (
                round(statistics.fmean(self.latencies) * 1000, 2) if self.latencies else None
            ),
            "statuses": dict(sorted(self.statuses.items())),
            "per_op": {
                name: {
                    "n": len(v),
                    "p50_ms": round(self.pct(v, 50), 2),
                    "p99_ms": round(self.pct(v, 99), 2),
                }
                for name, v in sorted(self.per_op.items())
            },
            "error_samples": self.error_samples[:5],
        }


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing non-loopback target {host!r}: only 127.0.0.1 is allowed")


async def run_load(
    base_url: str,
    ops: OpFactory,
    *,
    connections: int = 32,
    requests: int = 10_000,
    duration: float = 20.0,
    warmup: int = 0,
    ok: Callable[[str, httpx.Response], bool] | None = None,
) -> LoadResult:
    """Run ``requests`` operations (at most ``duration`` s) on ``connections`` connections."""
    check_loopback(base_url)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    is_ok = ok or (lambda _name, r: r.status_code < 400)
    result = LoadResult()
    counter = 0

    async with httpx.AsyncClient(
        base_url=base_url,
        limits=limits,
        timeout=30.0,
        http1=True,
        http2=False,
        headers=AUTH,
    ) as client:
        # Warm-up: open the connections and warm server caches, not measured.
        if warmup:
            sem = asyncio.Semaphore(connections)

            async def _warm(i: int) -> None:
                async with sem:
                    with contextlib.suppress(httpx.HTTPError):
                        await ops(-1 - i)[1](client)

            await asyncio.gather(*(_warm(i) for i in range(warmup)))

        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            nonlocal counter
            while counter < requests and time.perf_counter() < deadline:
                i = counter
                counter += 1
                name, op = ops(i)
                t0 = time.perf_counter()
                try:
                    resp = await op(client)
                    dt = time.perf_counter() - t0
                    result.statuses[resp.status_code] = result.statuses.get(resp.status_code, 0) + 1
                    if not is_ok(name, resp):
                        result.errors += 1
                        if len(result.error_samples) < 20:
                            result.error_samples.append(
                                f"{name} {resp.request.method} {resp.request.url} -> "
                                f"{resp.status_code} {resp.text[:300]}"
                            )
                except httpx.HTTPError as exc:
                    dt = time.perf_counter() - t0
                    result.errors += 1
                    if len(result.error_samples) < 20:
                        result.error_samples.append(f"{name}: {type(exc).__name__}: {exc}")
                result.requests += 1
                result.latencies.append(dt)
                result.per_op.setdefault(name, []).append(dt)

        await asyncio.gather(*(worker() for _ in range(connections)))
        result.elapsed = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("url", help="full URL on 127.0.0.1, e.g. http://127.0.0.1:8765/healthz")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-n", "--requests", type=int, default=10_000)
    parser.add_argument("-d", "--duration", type=float, default=20.0, help="time limit, seconds")
    parser.add_argument("-w", "--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    check_loopback(args.url)
    parts = urlsplit(args.url)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path + (f"?{parts.query}" if parts.query else "")

    def ops(_i: int) -> tuple[str, Op]:
        return "GET", lambda c: c.get(path)

    result = asyncio.run(
        run_load(
            base,
            ops,
            connections=args.connections,
            requests=args.requests,
            duration=args.duration,
            warmup=args.warmup,
        )
    )
    json.dump(result.summary(), sys.stdout, indent=2)
    print()
    return 1 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
