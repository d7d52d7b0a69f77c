"""Helpers for the SSH-side tests (auth, host keys, staying up): user
keys of every type, a real ssh-agent, raw FTP control probes, and a
rate-limited curl download that runs in the background.

    key = make_key(bed, "ecdsa", "ecdsa", authorize=ssh)   # path of the private key
    agent = Agent(bed); agent.add(key); agent.sock          # SSH_AUTH_SOCK
    text, closed = greeting(target)                         # what a new client is told
    dl = SlowRetr(bed, target, "data-64M", rate="20M")     # curl in the background
    dl.received(); dl.wait()                                # bytes so far; exit status

Processes started here go through procs.Daemon (stopped by the harness's
nets) or are waited for with a bounded timeout.
"""

import os
import socket
import subprocess
import time

from . import procs
from .testbed import FTP_PASSWORD, FTP_USER, _run


def make_key(bed, name, keytype, passphrase="", authorize=None, fmt=None, bits=None):
    """A new user key in the test bed's keys/ directory; with AUTHORIZE
    (an SshServer) its public half is appended to that server's
    authorized_keys. fmt: None (OpenSSH format) or "PEM"."""
    d = bed.path("keys")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    argv = ["ssh-keygen", "-q", "-t", keytype, "-N", passphrase, "-C", "ftpssh-test-" + name, "-f", path]
    if fmt:
        argv += ["-m", fmt]
    if bits:
        argv += ["-b", str(bits)]
    _run(argv)
    if authorize is not None:
        authorize_key(authorize, path)
    return path


def authorize_key(ssh, key):
    with open(key + ".pub") as pub, open(ssh.authorized_keys, "a") as out:
        out.write(pub.read())


def fingerprint(pubkey_path):
    """"SHA256:..." of a public key file, as ssh-keygen -l prints it."""
    return _run(["ssh-keygen", "-l", "-E", "sha256", "-f", pubkey_path]).split()[1]


def empty_home(bed, name):
    """A fresh $HOME with nothing in it (no ~/.ssh: no default keys, no
    known_hosts)."""
    d = bed.path("homes", name)
    os.makedirs(d)
    return d


def lsan_env(bed):
    """Environment for an ASan ftpssh that logs in with an ECDSA key.

    libssh2 1.10 (Debian 12) leaks a BIGNUM (BN_new, then filled by
    BN_bin2bn: the private exponent) each time it parses an OpenSSH-format
    ECDSA private key inside libssh2_userauth_publickey_fromfile_ex, twice
    per login: libssh2's own bug (upstream libssh2 issue #2079, "bn_exponent
    never freed in gen_publickey_from_ecdsa_openssh_priv_data"), which
    ftpssh cannot free. This suppresses only leaks allocated through BN_new
    or BN_bin2bn, which ftpssh never calls itself; every other leak is
    still reported. LeakSanitizer needs the slow
    unwinder to see BN_bin2bn in the stack (libcrypto has no frame
    pointers)."""
    path = bed.path("lsan-libssh2-ecdsa.supp")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("# libssh2 1.10: ECDSA private key parsing leaks a BIGNUM (libssh2 #2079)\n"
                    "leak:BN_new\nleak:BN_bin2bn\n")
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    return {"LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % path,
            "ASAN_OPTIONS": asan + ":fast_unwind_on_malloc=0"}


class Agent:
    """A real ssh-agent (-D: in the foreground, so the harness owns its
    PID) on a socket in the test bed."""

    _n = [0]

    def __init__(self, bed):
        Agent._n[0] += 1
        self.bed = bed
        self.sock = bed.path("agent-%d.sock" % Agent._n[0])
        self.daemon = procs.Daemon("ssh-agent-%d" % Agent._n[0],
                                   ["ssh-agent", "-D", "-a", self.sock], bed.logdir)
        deadline = time.monotonic() + 10 * procs.time_scale()
        while not os.path.exists(self.sock):
            if not self.daemon.alive() or time.monotonic() > deadline:
                raise RuntimeError("ssh-agent did not create its socket:\n" + self.daemon.describe())
            time.sleep(0.02)

    def env(self):
        return dict(os.environ, SSH_AUTH_SOCK=self.sock)

    def add(self, *keys):
        _run(["ssh-add"] + list(keys), env=self.env())

    def listing(self):
        return _run(["ssh-add", "-l"], env=self.env())

    def stop(self):
        self.daemon.stop()


def wait_for(cond, seconds, what, run=None):
    """Poll COND until true, at most SECONDS (scaled); RUN (an Ftpssh) must
    stay alive meanwhile."""
    deadline = time.monotonic() + seconds * procs.time_scale()
    while not cond():
        if run is not None and not run.alive():
            raise AssertionError("ftpssh exited while waiting for %s:\n%s" % (what, run.describe()))
        if time.monotonic() > deadline:
            raise AssertionError("no %s within %.0fs%s" % (
                what, seconds, (":\n" + run.describe()) if run is not None else ""))
        time.sleep(0.05)


# --- FTP control probes ----------------------------------------------------

def read_reply(sock, timeout=10.0):
    """One complete FTP reply (multi-line aware) from SOCK, as text; ""
    if the peer closed first. Raises socket.timeout."""
    sock.settimeout(timeout * procs.time_scale())
    buf = b""
    while True:
        lines = buf.split(b"\r\n")
        if lines and len(lines[0]) >= 4 and lines[0][:3].isdigit():
            code = lines[0][:3]
            if lines[0][3:4] == b" ":
                return lines[0].decode("utf-8", "replace")
            for i, l in enumerate(lines[1:-1], 1):
                if l[:3] == code and l[3:4] == b" ":
                    return b"\r\n".join(lines[:i + 1]).decode("utf-8", "replace")
        b = sock.recv(4096)
        if not b:
            return buf.decode("utf-8", "replace")
        buf += b


def wait_closed(sock, timeout=10.0):
    """True if the peer closes SOCK (EOF or reset) within TIMEOUT, reading
    and dropping whatever comes first."""
    sock.settimeout(timeout * procs.time_scale())
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def greeting(target, timeout=10.0):
    """Connect to TARGET as a new FTP client: (first reply, closed after
    it?)."""
    with socket.create_connection((target.host, target.port), timeout=timeout) as s:
        text = read_reply(s, timeout)
        return text, wait_closed(s, timeout)


class Control:
    """A raw, logged-in FTP control connection (no client library between
    the test and the replies)."""

    def __init__(self, target, timeout=10.0):
        self.sock = socket.create_connection((target.host, target.port), timeout=timeout)
        self.timeout = timeout
        self.welcome = read_reply(self.sock, timeout)
        assert self.welcome.startswith("220"), "greeting: %r" % self.welcome
        r = self.cmd("USER " + FTP_USER)
        assert r.startswith("331"), "USER: %r" % r
        r = self.cmd("PASS " + FTP_PASSWORD)
        assert r.startswith("230"), "PASS: %r" % r

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return read_reply(self.sock, self.timeout)

    def reply(self, timeout=None):
        return read_reply(self.sock, self.timeout if timeout is None else timeout)

    def close(self):
        self.sock.close()


class RawRetr:
    """A RETR driven by hand over a Control session (EPSV), so the test
    decides when the data is read and sees the final reply itself, as a
    client that does not know the file's size would (226 or an error)."""

    def __init__(self, target, name, timeout=10.0):
        self.ctl = Control(target, timeout)
        r = self.ctl.cmd("TYPE I")
        assert r.startswith("200"), "TYPE I: %r" % r
        r = self.ctl.cmd("EPSV")
        assert r.startswith("229"), "EPSV: %r" % r
        port = int(r[r.index("(|||") + 4:r.index("|)")])
        self.data = socket.create_connection((target.host, port), timeout=timeout)
        r = self.ctl.cmd("RETR " + name)
        assert r.startswith("150") or r.startswith("125"), "RETR: %r" % r
        self.got = 0

    def read(self, n, timeout=10.0):
        """Read N bytes of the file (fewer only if the data connection ends)."""
        self.data.settimeout(timeout * procs.time_scale())
        while n > 0:
            b = self.data.recv(min(n, 1 << 16))
            if not b:
                break
            self.got += len(b)
            n -= len(b)

    def drain(self, timeout=10.0):
        """Read until the data connection ends: 'eof', 'reset' or 'open'
        (still open after TIMEOUT without a byte)."""
        self.data.settimeout(timeout * procs.time_scale())
        try:
            while True:
                b = self.data.recv(1 << 16)
                if not b:
                    return "eof"
                self.got += len(b)
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "open"

    def final_reply(self, timeout=10.0):
        return self.ctl.reply(timeout)

    def close(self):
        self.data.close()
        self.ctl.close()


# --- a download in the background ------------------------------------------

class SlowRetr:
    """curl RETR of REMOTE into a file, rate-limited (--limit-rate RATE) so
    it lasts long enough to do something to the tunnel meanwhile."""

    def __init__(self, bed, target, remote, rate, local=None, max_time=120):
        self.local = local or os.path.join(bed.clientdir, "slow-%d-%s" % (time.monotonic_ns(), remote))
        self.err_path = self.local + ".curl-stderr"
        self.argv = ["curl", "-sS", "-v", "--ftp-pasv", "--connect-timeout", "10",
                     "--max-time", str(int(max_time * procs.time_scale())),
                     "--limit-rate", rate, "-u", "%s:%s" % (FTP_USER, FTP_PASSWORD),
                     "-o", self.local, "ftp://%s:%d/%s" % (target.host, target.port, remote)]
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, cwd=bed.clientdir,
                                     env=dict(os.environ, HOME=bed.home, LC_ALL="C"))
        self.rc = None

    def received(self):
        try:
            return os.path.getsize(self.local)
        except OSError:
            return 0

    def wait_bytes(self, n, timeout=30.0):
        """Wait until at least N bytes arrived (the transfer is running)."""
        deadline = time.monotonic() + timeout * procs.time_scale()
        while self.received() < n:
            if self.proc.poll() is not None:
                raise AssertionError("curl ended (status %s) after %d bytes, before %d:\n%s"
                                     % (self.proc.returncode, self.received(), n, self.stderr()))
            if time.monotonic() > deadline:
                raise AssertionError("curl got %d bytes in %.0fs, waiting for %d:\n%s"
                                     % (self.received(), timeout, n, self.stderr()))
            time.sleep(0.02)

    def wait(self, timeout=60.0):
        try:
            self.rc = self.proc.wait(timeout * procs.time_scale())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("curl still running after %.0fs (hung?):\n%s" % (timeout, self.stderr()))
        finally:
            self._err.close()
        return self.rc

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-6000:]
        except OSError:
            return ""

    def replies(self):
        return [l[2:].rstrip("\r") for l in self.stderr().splitlines() if l.startswith("< ")]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self._err.closed:
            self._err.close()
        for p in (self.local, self.err_path):
            try:
                os.unlink(p)
            except OSError:
                pass
