"""MLLP listener: frames over TCP (python-hl7's asyncio streams), each handled in a worker thread.

Per connection, frames are handled in order and each ACK is written only after its handler
returned (the event is committed by then). Connections are independent: a bad frame, a failing
handler or a dropped peer ends at most its own connection. Frames are read with ``readuntil`` on
python-hl7's stream reader rather than ``readblock`` so that the bytes of a frame without a start
block are kept (they become a rejected event) and whitespace some senders put between frames is
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from hl7.mllp import start_hl7_server  # type: ignore[import-untyped]
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK  # type: ignore[import-untyped]

from carecoord.events.errors import EventNotStored

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "MllpListener", "unframe"]

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
_END = END_BLOCK + CARRIAGE_RETURN

Handler = Callable[[bytes], bytes]


def unframe(frame: bytes) -> bytes:
    """The message in ``<VT>message<FS><CR>``; without a start block, all bytes (to be refused)."""
    body = frame[: -len(_END)] if frame.endswith(_END) else frame
    start = body.find(START_BLOCK)
    if start >= 0 and not body[:start].strip():
        return body[start + 1 :]
    return body


class MllpListener:
    """An asyncio MLLP server; ``handle(message) -> ack`` is blocking and runs in a thread pool.

    ``handle`` raising :class:`EventNotStored` closes the connection without an ACK (the sender
    sends again); ``too_large(limit) -> ack`` answers a frame over ``max_frame_bytes``, after which
    the connection is closed.
    """

    def __init__(
        self,
        handle: Handler,
        *,
        too_large: Callable[[int], bytes],
        host: str = "127.0.0.1",
        port: int = 2575,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        workers: int = 8,
    ) -> None:
        self._handle = handle
        self._too_large = too_large
        self.host = host
        self.requested_port = port
        self.max_frame_bytes = max_frame_bytes
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mllp")
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        assert self._server is not None, "the listener is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await start_hl7_server(
            self._on_connect, self.host, self.requested_port, limit=self.max_frame_bytes
        )
        log.info("MLLP listening on %s:%s", self.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop accepting, end open connections, wait for running handlers to finish."""
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def __aenter__(self) -> MllpListener:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _on_connect(self, reader: Any, writer: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _serve(self, reader: Any, writer: Any) -> None:
        loop = asyncio.get_running_loop()
        frames = 0
        try:
            while True:
                try:
                    frame: bytes = await reader.readuntil(_END)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        log.warning(
                            "MLLP peer closed mid-frame (%s bytes dropped)", len(exc.partial)
                        )
                    break
                except asyncio.LimitOverrunError:
                    writer.writeblock(self._too_large(self.max_frame_bytes))
                    await writer.drain()
                    break
                frames += 1
                try:
                    ack = await loop.run_in_executor(self._executor, self._handle, unframe(frame))
                except EventNotStored:
                    break  # nothing stored, nothing acknowledged: the sender will send again
                writer.writeblock(ack)
                await writer.drain()
        except OSError as exc:
            log.info("MLLP connection lost (%s)", type(exc).__name__)
        except Exception as exc:
            log.error("MLLP connection ended by an unexpected %s", type(exc).__name__)
        finally:
            log.debug("MLLP connection closed after %s frame(s)", frames)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
