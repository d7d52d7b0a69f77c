#!/usr/bin/env python3
"""A long link in user space: a TCP relay that delays each direction.

    delay_relay.py --listen-port P --target-port T --delay-ms 25 [--max-queue BYTES]

Listens on 127.0.0.1:P (0 = kernel's choice) and relays every accepted
connection to 127.0.0.1:T. Every chunk read from one side is stamped with
the time it arrived and written to the other side DELAY ms later, so a
relay with 25 ms each way is a 50 ms round trip (the kernel's netem is not
available on the test bed). The relay reads eagerly, so the kernel socket
buffers add no extra delay; what is in flight lives in the relay's queue.

Memory is bounded: when one direction holds more than --max-queue bytes
(queued plus not yet taken by the kernel), the relay stops reading its
source until the queue is below half of that. The default (64 MiB) is far
above any SSH window in play (bandwidth x delay at 1 GB/s and 25 ms is
25 MB), so the bound never limits throughput.

Half-close is relayed in order (EOF after the last delayed byte). The
first line on stdout is "listening on PORT". SIGTERM or SIGINT stops it.
"""

import argparse
import asyncio
import collections
import signal
import socket
import sys


class Direction:
    """One direction of one relayed connection: src -> (delay) -> dst."""

    def __init__(self, loop, delay, max_queue, name):
        self.loop = loop
        self.delay = delay
        self.high = max_queue
        self.low = max_queue // 2
        self.name = name
        self.src = None          # transport we read from
        self.dst = None          # transport we write to
        self.queue = collections.deque()  # (due time, bytes or None for EOF)
        self.queued = 0
        self.timer = None
        self.paused = False
        self.eof_due = False
        self.closed = False

    def pending(self):
        return self.queued + (self.dst.get_write_buffer_size() if self.dst else 0)

    def push(self, data):
        due = self.loop.time() + self.delay
        self.queue.append((due, data))
        if data is not None:
            self.queued += len(data)
        if self.timer is None:
            self.timer = self.loop.call_at(due, self.flush)
        if self.src is not None and not self.paused and self.pending() > self.high:
            self.paused = True
            self.src.pause_reading()

    def flush(self):
        self.timer = None
        now = self.loop.time()
        out = []
        eof = False
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                eof = True
                break
            out.append(data)
            self.queued -= len(data)
        if self.dst is not None and not self.closed:
            if out:
                self.dst.write(b"".join(out) if len(out) > 1 else out[0])
            if eof:
                if self.dst.can_write_eof():
                    self.dst.write_eof()
                else:
                    self.dst.close()
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)
        self.maybe_resume()

    def maybe_resume(self):
        if self.paused and self.src is not None and self.pending() < self.low:
            self.paused = False
            try:
                self.src.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    def drop(self):
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0


class Side(asyncio.Protocol):
    """One socket of a relayed pair. `out` is the direction this socket
    feeds (data read here goes there); `back` is the one it drains."""

    def __init__(self, pair, out, back):
        self.pair = pair
        self.out = out
        self.back = back
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Let the kernel take what it can before counting it as ours.
        transport.set_write_buffer_limits(high=1 << 20, low=1 << 18)
        self.out.src = transport
        self.back.dst = transport

    def data_received(self, data):
        self.out.push(data)

    def eof_received(self):
        self.out.push(None)
        return True  # keep the other direction open (half-close)

    def resume_writing(self):
        self.back.maybe_resume()

    def connection_lost(self, exc):
        self.pair.side_lost(self, exc)


class Pair:
    def __init__(self, loop, delay, max_queue):
        self.loop = loop
        self.up = Direction(loop, delay, max_queue, "up")      # client -> server
        self.down = Direction(loop, delay, max_queue, "down")  # server -> client
        self.client = Side(self, self.up, self.down)
        self.server = Side(self, self.down, self.up)
        self.lost = 0

    def side_lost(self, side, exc):
        self.lost += 1
        other = self.server if side is self.client else self.client
        # A reset (or a close with data unsent) ends the pair. A clean
        # close after both EOFs was already relayed by write_eof.
        if other.transport is not None and not other.transport.is_closing():
            if exc is not None:
                other.transport.abort()
            else:
                # Deliver what is still queued towards the other side,
                # then close it.
                d = side.back  # direction writing into `side` is moot now
                d.drop()
                od = side.out
                delay = max(0.0, od.queue[-1][0] - self.loop.time()) if od.queue else 0.0
                self.loop.call_later(delay + 0.001, other.transport.close)


async def serve(args):
    loop = asyncio.get_running_loop()
    delay = args.delay_ms / 1000.0

    async def on_client(csock):
        pair = Pair(loop, delay, args.max_queue)
        try:
            await loop.create_connection(lambda: pair.server, args.target_host, args.target_port)
        except OSError as e:
            print("delay_relay: cannot reach %s:%d: %s" % (args.target_host, args.target_port, e),
                  file=sys.stderr, flush=True)
            csock.close()
            return
        await loop.connect_accepted_socket(lambda: pair.client, csock)

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.listen_host, args.listen_port))
    lsock.listen(128)
    lsock.setblocking(False)
    print("listening on %d" % lsock.getsockname()[1], flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def accept_loop():
        while True:
            csock, _ = await loop.sock_accept(lsock)
            csock.setblocking(False)
            loop.create_task(on_client(csock))

    task = loop.create_task(accept_loop())
    await stop.wait()
    task.cancel()
    lsock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--listen-port", type=int, default=0)
    ap.add_argument("--target-host", default="127.0.0.1")
    ap.add_argument("--target-port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay (RTT/2)")
    ap.add_argument("--max-queue", type=int, default=64 << 20,
                    help="bytes held per direction before reading stops")
    args = ap.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
