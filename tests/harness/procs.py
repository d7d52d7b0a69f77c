"""Processes the harness starts: daemons with their output in files.

Every process started through Daemon is recorded in one registry. Three
nets make sure none outlives the harness: the owner's finalizer calls
stop(), an atexit handler stops whatever is still running, and each child
gets PR_SET_PDEATHSIG so the kernel kills it if the harness dies without
running Python's exit code (SIGKILL, crash).

Daemons never share the harness's stdin/stdout/stderr: a daemon holding a
pipe open would make `... | tail` wait forever.
"""

import atexit
import collections
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time

_REGISTRY = []
_LOCK = threading.Lock()
PR_SET_PDEATHSIG = 1


def time_scale():
    """Factor applied to every timeout: valgrind makes things slow."""
    env = os.environ.get("FTPSSH_TEST_TIME_SCALE")
    if env:
        return float(env)
    return 5.0 if os.environ.get("FTPSSH_WRAP") else 1.0


def _child_setup():
    # New session: stop() signals the whole process group. Death signal:
    # the kernel kills us if the harness dies first.
    os.setsid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


# Ports free_port() handed out lately, so that this process's own
# free_port() calls never return the same number twice in a row. It does
# NOT stop any other bind(0) (ftpssh's, a server's) from drawing a port
# free_port() returned and closed: the kernel may give one ephemeral port
# to two bind(0) calls in a row. A port that must stay unused needs
# reserve_port(), which holds it.
_RECENT_PORTS = collections.deque(maxlen=512)


def free_port():
    """A loopback TCP port nobody listens on right now (never 21), and not
    one this process's free_port() handed out lately. The port is closed
    again: anyone's bind(0) may take it from now on (see reserve_port)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 1024 and port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            return port
    raise RuntimeError("no free loopback port")


class PortHold:
    """A TCP socket bound to 127.0.0.1:port and never listening: while it
    is open, a connect to the port is refused (RST) and no other socket
    can bind 127.0.0.1:port or 0.0.0.0:port, whatever its SO_REUSEADDR
    (ours has none, and does not listen). listen() turns it into the
    port's listener later, without a window where the port is free."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.bind(("127.0.0.1", 0))
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]

    def listen(self, backlog=8):
        self.sock.listen(backlog)
        return self.sock

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def reserve_port():
    """A loopback port held, not just remembered: a PortHold (use it with
    `with`, or close() it in a finally). For a port a test needs to stay
    unused, or to come up later, while ftpssh or a server bind(0)s."""
    return PortHold()


def signal_pids(pids, sig):
    """Signal each of pids; the ones that still existed (sshd's short-lived
    helpers come and go)."""
    done = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


@contextlib.contextmanager
def stopped(pids):
    """SIGSTOP each of pids (alive to TCP, silent to their peers), SIGCONT
    them on the way out; yields the ones that existed."""
    done = signal_pids(pids, signal.SIGSTOP)
    try:
        yield done
    finally:
        signal_pids(done, signal.SIGCONT)


def can_connect(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path, limit=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return "<%s unreadable: %s>" % (path, e)


class Daemon:
    """One child process, stdin from /dev/null, stdout+stderr to files."""

    def __init__(self, name, argv, logdir, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stdout_path = os.path.join(logdir, name + ".stdout")
        self.stderr_path = os.path.join(logdir, name + ".stderr")
        self.returncode = None
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=cwd,
                preexec_fn=_child_setup,
                close_fds=True,
            )
        self.pid = self.proc.pid
        with _LOCK:
            _REGISTRY.append(self)

    def alive(self):
        return self.proc.poll() is None

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def describe(self):
        state = "running" if self.alive() else "exited with %s" % self.proc.returncode
        return "%s (pid %d, %s)\n  argv: %s\n  stderr tail:\n%s" % (
            self.name,
            self.pid,
            state,
            " ".join(self.argv),
            tail(self.stderr_path),
        )

    def wait_port(self, port, timeout=10.0, host="127.0.0.1"):
        """Wait until PORT accepts connections; fail early if we died."""
        deadline = time.monotonic() + timeout * time_scale()
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError("%s died while starting:\n%s" % (self.name, self.describe()))
            if can_connect(port, host):
                return
            time.sleep(0.05)
        raise RuntimeError("%s not listening on %s:%d after %.0fs:\n%s"
                           % (self.name, host, port, timeout, self.describe()))

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal the process (and its group), wait bounded, then SIGKILL.

        Returns the process's own exit status (negative: killed by signal).
        """
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout * time_scale())
            except subprocess.TimeoutExpired:
                pass
        self.returncode = self.proc.poll()
        # Whatever the main process left behind in its group goes too
        # (sshd and vsftpd session children, proftpd's).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.returncode is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.returncode = self.proc.poll()
        with _LOCK:
            if self in _REGISTRY:
                _REGISTRY.remove(self)
        return self.returncode


def stop_all():
    with _LOCK:
        left = list(_REGISTRY)
    for d in reversed(left):
        try:
            d.stop(timeout=2)
        except Exception:  # the safety net must not raise
            pass


atexit.register(stop_all)


def _proc_field(pid, name, key):
    """The number after "KEY:" in /proc/PID/NAME; raises OSError when the
    process is gone, RuntimeError when the field is missing."""
    with open("/proc/%d/%s" % (pid, name)) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/%d/%s" % (key, pid, name))


def status_kib(pid, key):
    """A /proc/PID/status field in KiB (VmRSS, VmHWM); raises as _proc_field."""
    return _proc_field(pid, "status", key)


def io_count(pid, key):
    """A /proc/PID/io counter (syscw: write-type syscalls, wchar: bytes
    they wrote, ...); raises as _proc_field."""
    return _proc_field(pid, "io", key)


def socket_inodes(pid):
    """Inodes of the sockets process PID holds open (from /proc/PID/fd);
    raises OSError when the process is gone."""
    inodes = set()
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes
