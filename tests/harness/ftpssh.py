"""The process under test: ftpssh, started with -L forwards to test-bed
FTP servers through the test-bed sshd.

    proxy = Ftpssh(bed, [server_a, server_b])   # waits for the announcements
    proxy.targets      -> [Target(127.0.0.1, port_a), Target(127.0.0.1, port_b)]
    proxy.assert_alive()
    proxy.stop()       # SIGTERM; raises if it misbehaved (sanitizer report,
                       # unexpected exit status, no exit)

Environment:
    FTPSSH_BIN      binary to test (default build/asan/ftpssh)
    FTPSSH_WRAP     command prefix, e.g. "valgrind -q --error-exitcode=99"
    FTPSSH_TEST_VERBOSE=1   pass -v to ftpssh
    FTPSSH_TEST_MODE        ftpssh (default) | ssh | direct
        ssh:    `ssh -N -L` through the test-bed sshd stands in for ftpssh
                (control connection tunnelled, data connections direct):
                proves the test bed and the clients, not ftpssh;
        direct: clients talk to the FTP servers themselves.
    Tests that only make sense for ftpssh are skipped in the other modes.
"""

import fcntl
import os
import re
import select
import shlex
import signal
import subprocess
import termios
import time

from . import procs
from .testbed import REPO

ANNOUNCE = re.compile(r"point your FTP client at ftp://127\.0\.0\.1:(\d+)/ \(passive mode\)")
SANITIZER = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                       r"UndefinedBehaviorSanitizer|Invalid (read|write)|definitely lost: [1-9]")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# Exit statuses accepted after SIGTERM: a clean exit, or death by the
# signal itself.
CLEAN_EXIT = (0, -signal.SIGTERM, 128 + signal.SIGTERM)

_counter = [0]


def mode():
    m = os.environ.get("FTPSSH_TEST_MODE", "ftpssh")
    if m not in ("ftpssh", "ssh", "direct"):
        raise RuntimeError("FTPSSH_TEST_MODE must be ftpssh, ssh or direct, not %r" % m)
    return m


def binary():
    b = os.environ.get("FTPSSH_BIN", "build/asan/ftpssh")
    return b if os.path.isabs(b) else os.path.join(REPO, b)


_libssh2 = []


def libssh2_version():
    """(version tuple, "bundled"|"system") of the libssh2 the binary under
    test runs, from its --version line "... (libssh2 1.11.1 bundled, ...)"."""
    if not _libssh2:
        out = subprocess.run([binary(), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
        m = re.search(r"libssh2 ([0-9.]+)\s*(\w*)", out)
        if not m:
            raise RuntimeError("no libssh2 version in %s --version: %r" % (binary(), out))
        _libssh2.append((tuple(int(x) for x in m.group(1).split(".")), m.group(2)))
    return _libssh2[0]


def libssh2_at_least(*v):
    return libssh2_version()[0] >= tuple(v)


def wrap():
    return shlex.split(os.environ.get("FTPSSH_WRAP", ""))


def _next_name(prefix):
    _counter[0] += 1
    return "%s-%d" % (prefix, _counter[0])


class Target:
    """Where an FTP client connects: through the proxy, or direct."""

    def __init__(self, host, port, server):
        self.host = host
        self.port = port
        self.server = server

    def __repr__(self):
        return "ftp://%s:%d/ (%s)" % (self.host, self.port, self.server.kind)


class ProxyError(AssertionError):
    pass


class Ftpssh:
    """One ftpssh process. With wait=False the constructor returns as soon
    as the process is started (for tests that expect it to fail)."""

    def __init__(self, bed, servers, known_hosts=None, strict="yes", identity=None,
                 use_l_option=False, extra=(), wait=True, ssh_port=None,
                 ssh=None, login=None, env=None, home=None, tty=False, binary_path=None,
                 prefix=()):
        """ssh: the SshServer to go through (default bed.sshd());
        identity: a key file, a list of them, or False for no -i at all;
        known_hosts / strict: False leaves the option out (ftpssh's default);
        login: the SSH login (default the sshd's); env: variables to set
        (None as a value removes one; SSH_AUTH_SOCK is removed unless given);
        home: $HOME (default the test bed's); tty: run on a pseudo-terminal
        of its own (its controlling terminal, for prompts; see tty_expect);
        binary_path: run this binary instead of FTPSSH_BIN's;
        prefix: a command that execs ftpssh (e.g. prlimit --nofile=N --)."""
        self.bed = bed
        self.servers = list(servers)
        ssh = bed.sshd() if ssh is None else ssh
        self.ssh = ssh
        self.ssh_port = ssh.port if ssh_port is None else ssh_port
        self.known_hosts = ssh.known_hosts if known_hosts is None else known_hosts
        self.name = _next_name("ftpssh")
        b = binary_path or binary()
        if not os.access(b, os.X_OK):
            raise ProxyError("ftpssh binary %s not found or not executable "
                             "(build it: make asan / make; or set FTPSSH_BIN)" % b)
        argv = list(prefix) + wrap() + [b]
        if os.environ.get("FTPSSH_TEST_VERBOSE") == "1":
            argv.append("-v")
        for srv in self.servers:
            argv += ["-L", "127.0.0.1:0:%s:%d" % (srv.host, srv.port)]
        argv += ["-p", str(self.ssh_port)]
        if identity is None:
            identity = [ssh.user_key]
        elif identity is False:
            identity = []
        elif isinstance(identity, str):
            identity = [identity]
        for key in identity:
            argv += ["-i", key]
        if self.known_hosts is not False:
            argv += ["-o", "UserKnownHostsFile=%s" % self.known_hosts]
        if strict is not False:
            argv += ["-o", "StrictHostKeyChecking=%s" % strict]
        argv += list(extra)
        if strict == "accept-new" and not any("hashknownhosts" in str(a).lower() for a in extra):
            # Debian's /etc/ssh/ssh_config says HashKnownHosts yes, and
            # ssh -G reads it: tests that look for the plain
            # "[127.0.0.1]:PORT" line ask for it (ssh: first value wins,
            # so a test's own extra, before this, decides).
            argv += ["-o", "HashKnownHosts=no"]
        login = ssh.login if login is None else login
        if use_l_option:
            argv += ["-l", login, "127.0.0.1"]
        else:
            argv += ["%s@127.0.0.1" % login]
        env_ = dict(os.environ)
        env_["HOME"] = bed.home if home is None else home
        env_.pop("SSH_AUTH_SOCK", None)  # key file only: no agent surprises
        env_.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env_.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        for k, v in (env or {}).items():
            if v is None:
                env_.pop(k, None)
            else:
                env_[k] = v
        self.argv = argv
        self.env = env_
        cwd = env_["HOME"]
        if tty:
            self.daemon = PtyDaemon(self.name, argv, bed.logdir, env=env_, cwd=cwd)
        else:
            self.daemon = procs.Daemon(self.name, argv, bed.logdir, env=env_, cwd=cwd)
        self.pid = self.daemon.pid
        self.ports = []
        self.targets = []
        self.stopped = False
        if wait:
            self.wait_ready()

    # --- the terminal (tty=True) ------------------------------------------
    def tty_expect(self, text, timeout=READY_TIMEOUT):
        """Wait until TEXT appears on the terminal (after what earlier calls
        consumed); everything read up to and including it."""
        return self.daemon.expect(text, timeout)

    def tty_send(self, text):
        self.daemon.send(text)

    def tty_text(self):
        """Everything ftpssh wrote on its terminal so far."""
        return self.daemon.tty_text()

    # --- start up --------------------------------------------------------
    def announcements(self):
        return [int(p) for p in ANNOUNCE.findall(self.daemon.stderr_text())]

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Wait for one announcement line per -L, bounded."""
        want = len(self.servers)
        deadline = time.monotonic() + timeout * procs.time_scale()
        while True:
            ports = self.announcements()
            if len(ports) >= want:
                break
            if not self.daemon.alive():
                raise ProxyError("ftpssh exited before announcing its listeners:\n"
                                 + self.daemon.describe())
            if time.monotonic() > deadline:
                raise ProxyError("ftpssh announced %d of %d listeners within %.0fs:\n%s"
                                 % (len(ports), want, timeout, self.daemon.describe()))
            time.sleep(0.05)
        if len(ports) != want:
            raise ProxyError("ftpssh announced %d listeners for %d -L:\n%s"
                             % (len(ports), want, self.daemon.describe()))
        for p in ports:
            if p == 21 or not (1 <= p <= 65535):
                raise ProxyError("ftpssh announced port %d" % p)
        # Announcement order is taken to be the order of the -L options;
        # test_multi checks it with the servers' banners.
        self.ports = ports
        self.targets = [Target("127.0.0.1", p, s) for p, s in zip(ports, self.servers)]

    @property
    def target(self):
        return self.targets[0]

    # --- health ----------------------------------------------------------
    def alive(self):
        return self.daemon.alive()

    def stderr(self):
        return self.daemon.stderr_text()

    def describe(self):
        return self.daemon.describe()

    def assert_alive(self):
        if not self.alive():
            raise ProxyError("ftpssh is no longer running:\n" + self.describe())
        self.assert_clean()

    def assert_clean(self):
        text = self.stderr()
        m = SANITIZER.search(text)
        if m:
            raise ProxyError("ftpssh reported a memory/UB error (%r):\n%s" % (m.group(0), text[-8000:]))

    def wait_exit(self, timeout=READY_TIMEOUT):
        """For runs expected to fail: the exit status, or None if still
        running after TIMEOUT seconds (then it is stopped)."""
        deadline = time.monotonic() + timeout * procs.time_scale()
        while time.monotonic() < deadline:
            rc = self.daemon.proc.poll()
            if rc is not None:
                self.stopped = True
                self.daemon.stop()
                return rc
            time.sleep(0.05)
        self.stop(check=False)
        return None

    def ssh_connections(self):
        """Number of TCP connections this process holds to the sshd port."""
        return len(tcp_connections(self.pid, remote_port=self.ssh_port))

    # --- shut down -------------------------------------------------------
    def stop(self, check=True):
        """SIGTERM, bounded wait. With check, raise ProxyError unless it
        exited cleanly and its stderr has no sanitizer report."""
        if self.stopped:
            return self.daemon.returncode
        self.stopped = True
        was_alive = self.alive()
        rc = self.daemon.stop(signal.SIGTERM, timeout=STOP_TIMEOUT)
        if not check:
            return rc
        if not was_alive:
            raise ProxyError("ftpssh had already exited (status %s) before SIGTERM:\n%s"
                             % (rc, self.describe()))
        self.assert_clean()
        if rc is None or rc == -signal.SIGKILL:
            raise ProxyError("ftpssh did not exit within %.0fs of SIGTERM:\n%s"
                             % (STOP_TIMEOUT, self.describe()))
        if rc not in CLEAN_EXIT:
            raise ProxyError("ftpssh exited with status %s after SIGTERM:\n%s" % (rc, self.describe()))
        return rc


class PtyDaemon(procs.Daemon):
    """A procs.Daemon whose stdin is the slave side of a new pseudo-
    terminal, made its controlling terminal (so /dev/tty is that terminal);
    stdout and stderr still go to files. The test holds the master side."""

    def __init__(self, name, argv, logdir, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stdout_path = os.path.join(logdir, name + ".stdout")
        self.stderr_path = os.path.join(logdir, name + ".stderr")
        self.returncode = None
        self.master, slave = os.openpty()
        self._seen = b""
        self._pos = 0

        def setup():
            procs._child_setup()  # new session, parent-death signal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(self.argv, stdin=slave, stdout=out, stderr=err,
                                             env=env, cwd=cwd, preexec_fn=setup, close_fds=True)
        finally:
            os.close(slave)
        self.pid = self.proc.pid
        with procs._LOCK:
            procs._REGISTRY.append(self)

    def _pull(self, wait):
        if self.master is None:
            return False
        r, _, _ = select.select([self.master], [], [], wait)
        if not r:
            return False
        try:
            b = os.read(self.master, 4096)
        except OSError:  # EIO: nobody holds the slave side any more
            b = b""
        if not b:
            time.sleep(wait)
            return False
        self._seen += b
        return True

    def expect(self, text, timeout):
        want = text.encode()
        deadline = time.monotonic() + timeout * procs.time_scale()
        while True:
            i = self._seen.find(want, self._pos)
            if i >= 0:
                out = self._seen[self._pos:i + len(want)]
                self._pos = i + len(want)
                return out.decode("utf-8", "replace")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProxyError("%r never appeared on ftpssh's terminal within %.0fs; "
                                 "terminal so far: %r\n%s"
                                 % (text, timeout, self.tty_text(), self.describe()))
            if not self._pull(min(left, 0.2)) and not self.alive():
                while self._pull(0):
                    pass
                if self._seen.find(want, self._pos) < 0:
                    raise ProxyError("ftpssh exited before %r appeared on its terminal; "
                                     "terminal: %r\n%s" % (text, self.tty_text(), self.describe()))

    def send(self, text):
        os.write(self.master, text.encode())

    def tty_text(self):
        while self._pull(0):
            pass
        return self._seen.decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        rc = super().stop(sig, timeout)
        if self.master is not None:
            try:
                self.tty_text()
            except OSError:
                pass
            os.close(self.master)
            self.master = None
        return rc


class SshForward:
    """`ssh -N -L` in place of ftpssh (FTPSSH_TEST_MODE=ssh)."""

    def __init__(self, bed, servers):
        ssh = bed.sshd()
        self.servers = list(servers)
        self.ports = [procs.free_port() for _ in self.servers]
        argv = ["ssh", "-F", "/dev/null", "-N", "-o", "BatchMode=yes",
                "-o", "ExitOnForwardFailure=yes",
                "-o", "UserKnownHostsFile=%s" % ssh.known_hosts,
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-i", ssh.user_key, "-p", str(ssh.port)]
        for p, srv in zip(self.ports, self.servers):
            argv += ["-L", "127.0.0.1:%d:%s:%d" % (p, srv.host, srv.port)]
        argv.append("%s@127.0.0.1" % ssh.login)
        env = dict(os.environ, HOME=bed.home)
        env.pop("SSH_AUTH_SOCK", None)
        self.daemon = procs.Daemon(_next_name("ssh-L"), argv, bed.logdir, env=env)
        self.pid = self.daemon.pid
        for p in self.ports:
            self.daemon.wait_port(p, timeout=READY_TIMEOUT)
        self.targets = [Target("127.0.0.1", p, s) for p, s in zip(self.ports, self.servers)]

    @property
    def target(self):
        return self.targets[0]

    def alive(self):
        return self.daemon.alive()

    def describe(self):
        return self.daemon.describe()

    def assert_alive(self):
        if not self.alive():
            raise ProxyError("ssh -L exited:\n" + self.describe())

    def stop(self, check=True):
        self.daemon.stop()


class Direct:
    """No forwarder at all (FTPSSH_TEST_MODE=direct)."""

    def __init__(self, bed, servers):
        self.servers = list(servers)
        self.targets = [Target(s.host, s.port, s) for s in self.servers]

    @property
    def target(self):
        return self.targets[0]

    def alive(self):
        return True

    def describe(self):
        return "direct connection"

    def assert_alive(self):
        pass

    def stop(self, check=True):
        pass


def start_gateway(bed, servers):
    """The forwarder for the current FTPSSH_TEST_MODE."""
    m = mode()
    if m == "ssh":
        return SshForward(bed, servers)
    if m == "direct":
        return Direct(bed, servers)
    return Ftpssh(bed, servers)


def tcp_connections(pid, remote_port):
    """(local, remote) TCP endpoints that process PID holds towards
    REMOTE_PORT, read from /proc (no ss/netstat needed)."""
    try:
        inodes = procs.socket_inodes(pid)
    except OSError:
        return []
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                    if inode in inodes and state == "01" and int(remote.split(":")[1], 16) == remote_port:
                        found.append((local, remote))
        except OSError:
            pass
    return found
