"""Point reads on PostgreSQL without a thread: an asyncio psycopg connection pool.

A read by id is one indexed query. Through SQLAlchemy it costs a threadpool hop, a pool checkout
and a rollback around the round trip; on the event loop with an autocommit connection it is the
round trip alone.

Reads of current resources that arrive together share one query (:meth:`AsyncReader.read_current`).
At most a few such queries are in flight at once; reads that arrive meanwhile wait together and
go out in one query as soon as one comes back. Under load one round trip, one pool checkout and
one statement's worth of driver work then serve dozens of reads (the driver work is most of a
read's cost on PostgreSQL), and reads never queue for pool connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

__all__ = ["AsyncReader"]

Pool = AsyncConnectionPool[AsyncConnection[Any]]

#: The current rows of several resources (the columns of the store's point read, with the key).
_READ_MANY = (
    "SELECT r.res_type, r.res_id, r.version_id, r.last_updated, r.deleted, "
    "CAST(r.content AS TEXT) FROM resources r "
    "JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) "
    "ON r.res_type = k.res_type AND r.res_id = k.res_id"
)
#: Reads sent in one query at most (a larger turn sends several).
_MAX_BATCH = 256

Key = tuple[str, str]


#: The reads waiting for one shared query: their futures by resource.
Waiting = dict[Key, list[asyncio.Future[Any]]]


class AsyncReader:
    """A small pool of autocommit connections for single-row reads, one per event loop.

    A server has one loop; a pool is opened on first use in a loop, so an application object
    served from several loops (test clients) never shares connections across them.
    """

    def __init__(self, database_url: str, *, max_size: int = 10, in_flight: int = 2) -> None:
        self._conninfo = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._max_size = max_size
        self._pools: dict[asyncio.AbstractEventLoop, Pool] = {}
        self._batches: dict[asyncio.AbstractEventLoop, Waiting] = {}
        #: Shared read queries in flight per loop, at most ``in_flight`` (see the module doc).
        self._in_flight = max(1, min(in_flight, max_size))
        self._running: dict[asyncio.AbstractEventLoop, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps weak references only

    async def _pool(self) -> Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = AsyncConnectionPool(
                self._conninfo,
                min_size=1,
                max_size=self._max_size,
                kwargs={"autocommit": True, "prepare_threshold": 0},
                open=False,
            )
            await pool.open(wait=True, timeout=30)
            raced = self._pools.get(loop)
            if raced is not None:  # another request of this loop opened one meanwhile
                await pool.close()
                return raced
            self._pools[loop] = pool
        return pool

    async def close(self) -> None:
        """Close the pool of the running loop."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    async def read_current(self, res_type: str, res_id: str) -> Any:
        """The row of the store's point read (version, last updated, deleted, content) for
        ``res_type/res_id``, or None; reads of the same loop turn share one query."""
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = {}
            if self._running.get(loop, 0) < self._in_flight:
                loop.call_soon(self._send, loop)  # else sent when a query comes back
        future: asyncio.Future[Any] = loop.create_future()
        batch.setdefault((res_type, res_id), []).append(future)
        return await future

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._batches.pop(loop, None)
        if batch is None:
            return
        keys = list(batch)
        for start in range(0, len(keys), _MAX_BATCH):
            part = {key: batch[key] for key in keys[start : start + _MAX_BATCH]}
            self._running[loop] = self._running.get(loop, 0) + 1
            task = loop.create_task(self._answer(loop, part))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, loop: asyncio.AbstractEventLoop, waiting: Waiting) -> None:
        try:
            rows = await self._fetch_many(list(waiting))
        except BaseException as exc:  # every read of the batch gets the error
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._running[loop] -= 1
            if loop in self._batches:  # reads that waited meanwhile go out now
                self._send(loop)
        for key, futures in waiting.items():
            row = rows.get(key)
            for future in futures:
                if not future.done():  # its request may have been cancelled meanwhile
                    future.set_result(row)

    async def _fetch_many(self, keys: list[Key]) -> dict[Key, tuple[Any, ...]]:
        pool = await self._pool()
        async with pool.connection() as conn:
            cur = await conn.execute(
                _READ_MANY, ([k[0] for k in keys], [k[1] for k in keys]), prepare=True
            )
            return {(row[0], row[1]): row[2:] for row in await cur.fetchall()}

    async def fetch_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        pool = await self._pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()
