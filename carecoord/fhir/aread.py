"""Point reads on PostgreSQL without a thread: an asyncio psycopg connection pool.

A read by id is one indexed query. Through SQLAlchemy it costs a threadpool hop, a pool checkout
and a rollback around the round trip; on the event loop with an autocommit connection it is the
round trip alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

__all__ = ["AsyncReader"]

Pool = AsyncConnectionPool[AsyncConnection[Any]]


class AsyncReader:
    """A small pool of autocommit connections for single-row reads, one per event loop.

    A server has one loop; a pool is opened on first use in a loop, so an application object
    served from several loops (test clients) never shares connections across them.
    """

    def __init__(self, database_url: str, *, max_size: int = 10) -> None:
        self._conninfo = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self._max_size = max_size
        self._pools: dict[asyncio.AbstractEventLoop, Pool] = {}

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

    async def fetch_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        pool = await self._pool()
        async with pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()
