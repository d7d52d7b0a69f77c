"""The long link: the delay relay, built from tests/harness/delay_relay.c
(`make build/tests/delay_relay`; `make check` and `make bench` build it).

    d = relay.start(logdir, target_port=ssh.port, delay_ms=25)
    d.port          -> where to connect instead of the target
    d.stop()

Environment:
    DELAY_RELAY_BIN   the relay binary (default build/tests/delay_relay)

The relay delays each direction by delay_ms (so the round trip is twice
that) and holds at most max_queue bytes per direction; see the comment at
the top of delay_relay.c.
"""

import os
import re
import time

from . import procs
from .testbed import REPO


def binary():
    b = os.environ.get("DELAY_RELAY_BIN", "build/tests/delay_relay")
    return b if os.path.isabs(b) else os.path.join(REPO, b)


def start(logdir, target_port, delay_ms, name="delay-relay", max_queue=None,
          target_host=None, timeout=10.0):
    """Start a relay to target_port on a port of the kernel's choice; return
    its procs.Daemon once it listens, with .port set. It is not probed with
    a connection: the target would see that connection too."""
    b = binary()
    if not os.access(b, os.X_OK):
        raise RuntimeError("%s not built (make build/tests/delay_relay, or set DELAY_RELAY_BIN)" % b)
    argv = [b, "--listen-port", "0", "--target-port", target_port, "--delay-ms", "%g" % delay_ms]
    if max_queue is not None:
        argv += ["--max-queue", max_queue]
    if target_host is not None:
        argv += ["--target-host", target_host]
    d = procs.Daemon(name, argv, logdir)
    deadline = time.monotonic() + timeout * procs.time_scale()
    while True:
        with open(d.stdout_path, "rb") as f:
            m = re.match(rb"listening on (\d+)\n", f.read())
        if m:
            d.port = int(m.group(1))
            return d
        if not d.alive() or time.monotonic() > deadline:
            d.stop()
            raise RuntimeError("%s did not start:\n%s" % (name, d.describe()))
        time.sleep(0.02)
