"""A loopback TCP port that looks like a filtered host: a listener that
never accepts, its backlog full, so further connects hang (the kernel
drops the SYNs). Nothing leaves 127.0.0.0/8. Used by test_opens.py and
bench row 8."""

import select
import socket


class BlackHole:
    kind = "black-hole"

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.host, self.port = self.listener.getsockname()
        self.fillers = []
        for _ in range(16):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((self.host, self.port))
            self.fillers.append(s)
            _, w, _ = select.select([], [s], [], 0.3)
            if not w:
                return  # this one hangs: the backlog is full
        self.close()
        raise RuntimeError("could not fill the backlog of port %d" % self.port)

    def close(self):
        for s in self.fillers + [self.listener]:
            s.close()
        self.fillers = []
