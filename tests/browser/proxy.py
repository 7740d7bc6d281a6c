"""A real TCP proxy in front of the server, for the failures browsers meet behind corporate proxies.

Modes (``Proxy.mode``, changeable while running):

- ``"pass"``: forwards every byte both ways.
- ``"refuse_websocket"``: answers ``403`` to a request carrying ``Upgrade: websocket``; forwards
  everything else (the proxy that strips or forbids WebSockets).
- ``"blackhole_websocket"``: forwards the Upgrade and the server's ``101``, then passes no frame in
  either direction (the proxy that "supports" WebSockets but buffers them forever).

``kill_all()`` aborts every open connection, on both sides, mid-whatever (a Wi-Fi drop, a load
balancer restart). Only the first request of a connection is inspected: browsers never reuse a
keep-alive HTTP connection for a WebSocket handshake, so that is where an Upgrade can appear.
"""

from __future__ import annotations

import asyncio
import contextlib

HEAD_LIMIT = 64 * 1024
MODES = ("pass", "refuse_websocket", "blackhole_websocket")


class Proxy:
    def __init__(self, upstream_port: int, mode: str = "pass") -> None:
        assert mode in MODES, mode
        self.upstream_port = upstream_port
        self.mode = mode
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.refused_upgrades = 0
        self.blackholed_upgrades = 0
        self.connections = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0, limit=HEAD_LIMIT)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def kill_all(self) -> int:
        """Abort every connection open right now (both sides); returns how many were cut."""
        writers = list(self.writers)
        for writer in writers:
            writer.transport.abort()
        await asyncio.sleep(0)  # let the pumps notice
        return len(writers)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        await self.kill_all()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one client connection --------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        self.writers.add(writer)
        self.connections += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            upgrade = _is_websocket_upgrade(head)
            if upgrade and self.mode == "refuse_websocket":
                self.refused_upgrades += 1
                body = b"WebSockets are not allowed here\n"
                writer.write(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port, limit=HEAD_LIMIT)
            self.writers.add(upstream)
            upstream.write(head)
            if upgrade and self.mode == "blackhole_websocket":
                self.blackholed_upgrades += 1
                response = await up_reader.readuntil(b"\r\n\r\n")
                writer.write(response)  # the 101 goes through …
                await writer.drain()
                await _discard(reader)  # … and then nothing does, until the client gives up
                return
            await asyncio.gather(_pump(reader, upstream), _pump(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self.writers.discard(w)
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
            self.tasks.discard(task)  # type: ignore[arg-type]


def _is_websocket_upgrade(head: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        # Half-close is not worth modelling: when one side ends, end the other too.
        writer.close()


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65536):
            pass
