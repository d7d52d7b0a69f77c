"""Another local user racing an FTP client to its data port (issue 5's
data-port theft): a small Python process run as `nobody` with setpriv
that connects to HOST:PORT, optionally sends bytes (a forged upload),
and reads until the far side closes.

    t = Thief("127.0.0.1", port, send=b"forged")
    t.wait_connected()    # True once its connect() returned
    r = t.result()        # dict: uid, connect ("ok" or the error), bytes,
                          # sha256 of what it read, end ("eof", "reset",
                          # "timeout"), sent (bytes it managed to send)

The harness runs as root, so the thief's uid (65534) differs from the
FTP client's (0), which is what ftpssh's uid check looks at.
"""

import json
import os
import pwd
import select
import subprocess
import time

from . import procs

THIEF_USER = "nobody"
THIEF_GROUP = "nogroup"

_SCRIPT = r"""
import hashlib, json, os, socket, sys
host, port, nsend, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
r = {"uid": os.getuid(), "bytes": 0, "sent": 0}
try:
    s = socket.create_connection((host, port), timeout=limit)
except OSError as e:
    r["connect"] = repr(e)
    print(json.dumps(r), flush=True)
    sys.exit(0)
r["connect"] = "ok"
print("CONNECTED", flush=True)
h = hashlib.sha256()
try:
    if nsend:
        chunk = b"stolen-port forged upload\n" * 64
        while r["sent"] < nsend:
            r["sent"] += s.send(chunk[: nsend - r["sent"]])
    while True:
        b = s.recv(65536)
        if not b:
            r["end"] = "eof"
            break
        r["bytes"] += len(b)
        h.update(b)
except socket.timeout:
    r["end"] = "timeout"
except OSError as e:
    r["end"] = "reset (%s)" % e.__class__.__name__
r["sha256"] = h.hexdigest()
print(json.dumps(r), flush=True)
"""


class Thief:
    def __init__(self, host, port, send=0, limit=20.0):
        """send: how many forged bytes to send after connecting;
        limit: seconds for connect and for each read."""
        self.host = host
        self.port = port
        limit *= procs.time_scale()
        self.limit = limit
        argv = ["setpriv", "--reuid=%s" % THIEF_USER, "--regid=%s" % THIEF_GROUP,
                "--clear-groups", "/usr/bin/python3", "-c", _SCRIPT,
                host, str(port), str(send), str(limit)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd="/", env={"PATH": "/usr/bin:/bin"})
        self._out = b""

    @staticmethod
    def uid():
        return pwd.getpwnam(THIEF_USER).pw_uid

    def _read_some(self, wait):
        r, _, _ = select.select([self.proc.stdout], [], [], wait)
        if not r:
            return False
        b = os.read(self.proc.stdout.fileno(), 4096)
        self._out += b
        return bool(b)

    def wait_connected(self, timeout=10.0):
        """True once the thief reports its connect() succeeded; False if it
        failed (its result says why) or said nothing within TIMEOUT."""
        deadline = time.monotonic() + timeout * procs.time_scale()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if not self._read_some(min(left, 0.2)) and self.proc.poll() is not None:
                while self._read_some(0):
                    pass
                break
        return self._out.split(b"\n", 1)[0] == b"CONNECTED"

    def result(self, timeout=None):
        """Wait (bounded) for the thief to finish; its report as a dict."""
        if timeout is None:
            timeout = self.limit + 10
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("the thief process did not finish within %.0fs; output %r"
                                 % (timeout, self._out + out))
        text = (self._out + out).decode("utf-8", "replace")
        last = [l for l in text.splitlines() if l.startswith("{")]
        if self.proc.returncode != 0 or not last:
            raise AssertionError("the thief process failed (status %s):\n%s\n%s"
                                 % (self.proc.returncode, text, err.decode("utf-8", "replace")))
        return json.loads(last[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def listening(port, v6=False):
    """Whether something listens on loopback TCP PORT (from /proc)."""
    table = "/proc/net/tcp6" if v6 else "/proc/net/tcp"
    with open(table) as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_not_listening(port, v6=False, timeout=10.0):
    """True once nothing listens on PORT any more (bounded)."""
    deadline = time.monotonic() + timeout * procs.time_scale()
    while time.monotonic() < deadline:
        if not listening(port, v6):
            return True
        time.sleep(0.02)
    return False


_HOG = r"""
import json, select, socket, sys, time
host, port, n, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks, first, errors = [], {}, []
for i in range(n):
    try:
        socks.append(socket.create_connection((host, port), timeout=wait))
    except OSError as e:
        errors.append(repr(e))
bufs = {s: b"" for s in socks}
deadline = time.monotonic() + wait
while time.monotonic() < deadline and len(first) < len(socks):
    pending = [s for s in socks if s not in first]
    r, _, _ = select.select(pending, [], [], max(0.0, deadline - time.monotonic()))
    for s in r:
        try:
            b = s.recv(4096)
        except OSError as e:
            first[s] = "error " + e.__class__.__name__
            continue
        if not b:
            first[s] = "eof"
            continue
        bufs[s] += b
        if b"\n" in bufs[s]:
            first[s] = bufs[s].split(b"\n", 1)[0].decode("latin-1").rstrip("\r")
lines = [first.get(s, "silent") for s in socks]
print(json.dumps({"uid": __import__("os").getuid(), "lines": lines, "connect_errors": errors}), flush=True)
sys.stdin.read()  # hold the connections until told to stop
"""


class Hog:
    """A `nobody` process that opens N control connections to HOST:PORT,
    reads the first line of each (up to WAIT seconds in all) and holds
    them open until stop(): fd pressure from another local user.

        h = Hog("127.0.0.1", port, 120)
        r = h.result()   # {"uid", "lines": first line per connection or
                         #  "silent"/"eof", "connect_errors"}
        h.stop()
    """

    def __init__(self, host, port, n, wait=8.0):
        wait *= procs.time_scale()
        self.wait = wait
        argv = ["setpriv", "--reuid=%s" % THIEF_USER, "--regid=%s" % THIEF_GROUP,
                "--clear-groups", "/usr/bin/python3", "-c", _HOG, host, str(port), str(n),
                str(wait)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd="/", env={"PATH": "/usr/bin:/bin"})

    def result(self):
        deadline = time.monotonic() + self.wait + 60
        out = b""
        while b"\n" not in out:
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not r:
                self.stop()
                raise AssertionError("the hog said nothing in time")
            b = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not b:
                err = self.proc.stderr.read().decode("utf-8", "replace")
                raise AssertionError("the hog failed: %r\n%s" % (out, err))
            out += b
        return json.loads(out.split(b"\n", 1)[0])

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def as_nobody(script, *args, timeout=30.0):
    """Run a python SCRIPT as nobody; its stdout (bounded in time)."""
    argv = ["setpriv", "--reuid=%s" % THIEF_USER, "--regid=%s" % THIEF_GROUP,
            "--clear-groups", "/usr/bin/python3", "-c", script] + [str(a) for a in args]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd="/", env={"PATH": "/usr/bin:/bin"},
                       timeout=timeout * procs.time_scale())
    if r.returncode != 0:
        raise AssertionError("nobody script failed (%d): %s" % (r.returncode, r.stderr.decode()))
    return r.stdout.decode("utf-8", "replace")
