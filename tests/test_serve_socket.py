"""The socket `newsrec serve` binds before it says "serving": connections accepted on it answer
without Nagle's delay (a keep-alive response used to wait ~40 ms for the client's delayed ACK)."""

from __future__ import annotations

import asyncio
import socket

from newsrec_cli.commands.serve import _listen


def test_accepted_connections_have_nagle_off() -> None:
    sock = _listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)  # as uvicorn serves `sockets=[sock]`
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(6000):  # up to 60 s: a busy machine may take a while to accept
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0, seen
