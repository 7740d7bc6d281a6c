"""A bare asyncio TCP server on an ephemeral port, for tests that speak HTTP at the byte level."""

from __future__ import annotations

import asyncio
from typing import Self


class TcpServer:
    """Serve :meth:`handle` on 127.0.0.1 (an ephemeral port, ``self.port``) inside ``async with``."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
