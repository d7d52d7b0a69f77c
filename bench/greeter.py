#!/usr/bin/env python3
"""An FTP server that only greets, at once, however many come.

    greeter.py --port P

Listens on 127.0.0.1:P (backlog 4096) and writes "220 greeter ready" to
every connection the moment it is accepted, then holds the connection
until the client closes it (anything the client sends is read and
dropped). Bench row 8 measures how fast a forwarder brings 500 greetings
through; vsftpd cannot be the far end there: it forks a process per
client, and of 500 clients connecting at once straight to it 351 were
greeted (median 1.79 s) and 149 timed out, so it would measure vsftpd,
not the forwarder.

One asyncio loop, no threads: a greeting costs one accept and one write.
SIGTERM or SIGINT stops it.
"""

import argparse
import asyncio
import signal
import socket

GREETING = b"220 greeter ready\r\n"


async def greet(reader, writer):
    try:
        writer.write(GREETING)
        await writer.drain()
        while await reader.read(4096):
            pass
    except OSError:
        pass
    finally:
        writer.close()


async def main(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await asyncio.start_server(greet, sock=sock, backlog=4096)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with server:
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    asyncio.run(main(ap.parse_args().port))
