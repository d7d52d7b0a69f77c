"""Real FTP clients driven the same way: curl, lftp, wget, Python ftplib.

    c = client("curl", bed, target)
    r = c.retr("data-1M", local_path, mode="pasv")   # mode: None | "pasv" | "epsv"
    r = c.stor(local_path, "remote-name")
    r = c.listing()                                  # r.output: the LIST text
    r.sent, r.received                               # control lines seen

mode None is the client's own default (curl: EPSV, then PASV; lftp, wget,
ftplib: PASV on IPv4). "pasv" and "epsv" force one of them; for ftplib
"pasv" also trusts the address in the 227 (like lftp always does), so a
wrongly rewritten 227 fails the transfer instead of going unnoticed.

Active modes (the client listens, the other side connects to it):
"active" is the client's own active default (curl `-P -`: EPRT, then
PORT; lftp `ftp:passive-mode off`, wget `--no-passive-ftp`, ftplib
`set_pasv(False)`: PORT on IPv4, EPRT on IPv6); "port" and "eprt" force
one command (curl: `--disable-eprt` for PORT; ftplib: EPRT |1| on IPv4
by hand; lftp and wget cannot be told, so they refuse what they would
not send). ACTIVE_FLAVOURS lists what each client can do.

A target whose host is an IPv6 address ("::1") is bracketed in URLs
(curl also gets -g, so the brackets are not a glob).

Every client run has a timeout; a client failure raises ClientError
carrying the command, its exit status and its protocol transcript.
"""

import ftplib
import hashlib
import itertools
import os
import socket
import subprocess

from . import procs
from .testbed import FTP_PASSWORD, FTP_USER

CLIENTS = ("curl", "lftp", "wget", "ftplib")
UPLOAD_CLIENTS = ("curl", "lftp", "ftplib")  # wget only downloads
MODE_CLIENTS = ("curl", "lftp", "ftplib")    # clients that can be told PASV or EPSV
ACTIVE_MODES = ("active", "port", "eprt")
# Active commands each client can be made to send on IPv4 ("active" is
# always its default, the first one listed).
ACTIVE_FLAVOURS = {
    "curl": ("eprt", "port"),
    "lftp": ("port",),
    "wget": ("port",),
    "ftplib": ("port", "eprt"),
}
CMD_TIMEOUT = 60.0

_seq = itertools.count(1)


class ClientError(AssertionError):
    pass


class Result:
    def __init__(self, transcript="", output="", sent=(), received=()):
        self.transcript = transcript
        self.output = output
        self.sent = list(sent)
        self.received = list(received)

    def commands(self):
        """Upper-case command verbs sent on the control connection."""
        return [s.split(" ", 1)[0].upper() for s in self.sent if s]

    def codes(self):
        return [r[:3] for r in self.received if len(r) >= 3 and r[:3].isdigit()]


def timeout():
    return CMD_TIMEOUT * procs.time_scale()


class _Client:
    name = "?"

    def __init__(self, bed, target, user=FTP_USER, password=FTP_PASSWORD):
        self.bed = bed
        self.target = target
        self.user = user
        self.password = password

    def url(self, path=""):
        return "ftp://%s:%d/%s" % (url_host(self.target.host), self.target.port, path)

    def ipv6(self):
        return ":" in self.target.host

    def refuse_active(self, mode, can):
        """ClientError for an active MODE this client cannot be told to use."""
        if mode in ("port", "eprt") and mode not in can:
            raise ClientError("%s cannot be made to send %s here (it sends %s)"
                              % (self.name, mode.upper(), "/".join(c.upper() for c in can)))

    def env(self):
        return dict(os.environ, HOME=self.bed.home, LC_ALL="C")

    def run(self, argv, what):
        argv = [str(a) for a in argv]
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout(), env=self.env(),
                               cwd=self.bed.clientdir)
        except subprocess.TimeoutExpired as e:
            raise ClientError("%s %s: no result within %.0fs\n$ %s\n%s" % (
                self.name, what, timeout(), " ".join(argv),
                (e.stderr or b"").decode("utf-8", "replace")[-4000:]))
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        if r.returncode != 0:
            raise ClientError("%s %s against %r failed with exit status %d\n$ %s\n--- stdout\n%s\n--- stderr\n%s"
                              % (self.name, what, self.target, r.returncode, " ".join(argv),
                                 out[-3000:], err[-6000:]))
        return out, err

    def tempdir(self):
        d = os.path.join(self.bed.clientdir, "%s-%d" % (self.name, next(_seq)))
        os.makedirs(d)
        return d


class Curl(_Client):
    name = "curl"

    def base(self, mode):
        argv = ["curl", "-sS", "-v", "--max-time", int(timeout()), "--connect-timeout", "10",
                "-u", "%s:%s" % (self.user, self.password)]
        if mode in ACTIVE_MODES:
            # "-": listen on the control connection's local address.
            argv += ["--ftp-port", "-"]
            if mode == "port":
                argv.append("--disable-eprt")
        else:
            argv.append("--ftp-pasv")
            if mode == "pasv":
                argv.append("--disable-epsv")
        if self.ipv6():
            argv.append("-g")
        return argv

    @staticmethod
    def parse(err):
        sent = [l[2:].rstrip("\r") for l in err.splitlines() if l.startswith("> ")]
        received = [l[2:].rstrip("\r") for l in err.splitlines() if l.startswith("< ")]
        return sent, received

    def _result(self, out, err):
        sent, received = self.parse(err)
        return Result(err, out, sent, received)

    def retr(self, remote, local, mode=None):
        return self._result(*self.run(self.base(mode) + ["-o", local, self.url(remote)], "RETR " + remote))

    def stor(self, local, remote, mode=None):
        return self._result(*self.run(self.base(mode) + ["-T", local, self.url(remote)], "STOR " + remote))

    def listing(self, mode=None):
        return self._result(*self.run(self.base(mode) + [self.url("")], "LIST"))


class Lftp(_Client):
    name = "lftp"

    def __init__(self, *a, settings=(), **kw):
        """settings: extra lftp `set` lines, after the harness's own."""
        super().__init__(*a, **kw)
        self.settings = list(settings)

    def script(self, mode, body, log):
        t = int(timeout())
        if mode in ACTIVE_MODES:
            self.refuse_active(mode, ("eprt",) if self.ipv6() else ("port",))
        lines = [
            "set cmd:fail-exit yes",
            "set cmd:interactive no",
            "set net:max-retries 1",
            "set net:persist-retries 0",
            "set net:reconnect-interval-base 1",
            "set net:timeout %d" % t,
            "set ftp:ssl-allow no",
            "set ftp:passive-mode %s" % ("off" if mode in ACTIVE_MODES else "on"),
            # Use the address in the 227 exactly as sent: this is the
            # client that proves the rewritten 227.
            "set ftp:ignore-pasv-address no",
            "set ftp:fix-pasv-address no",
            "set ftp:prefer-epsv %s" % ("yes" if mode == "epsv" else "no"),
            "set xfer:clobber on",
        ] + ["set " + s for s in self.settings] + [
            "debug -o %s 5" % log,
            "open -u %s,%s -p %d %s" % (self.user, self.password, self.target.port,
                                        url_host(self.target.host)),
        ] + body + ["quit"]
        return "; ".join(lines)

    def _go(self, mode, body, what):
        log = os.path.join(self.tempdir(), "lftp-debug.log")
        try:
            out, _ = self.run(["lftp", "-c", self.script(mode, body, log)], what)
        except ClientError as e:
            raise ClientError("%s\n--- lftp debug log\n%s" % (e, procs.tail(log, 6000)))
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        sent, received = [], []
        for l in text.splitlines():
            if l.startswith("---> "):
                sent.append(l[5:])
            elif l.startswith("<--- "):
                received.append(l[5:])
        return Result(text, out, sent, received)

    def retr(self, remote, local, mode=None):
        return self._go(mode, ["get %s -o %s" % (remote, local)], "RETR " + remote)

    def stor(self, local, remote, mode=None):
        return self._go(mode, ["put %s -o %s" % (local, remote)], "STOR " + remote)

    def listing(self, mode=None):
        return self._go(mode, ["ls"], "LIST")


class Wget(_Client):
    name = "wget"

    def base(self, mode=None):
        if mode in ACTIVE_MODES:
            self.refuse_active(mode, ("eprt",) if self.ipv6() else ("port",))
        return ["wget", "-d", "--tries=1", "--timeout=%d" % int(timeout()),
                "--no-passive-ftp" if mode in ACTIVE_MODES else "--passive-ftp",
                "--no-hsts", "--ftp-user=%s" % self.user, "--ftp-password=%s" % self.password]

    @staticmethod
    def parse(err):
        sent = [l[4:].strip() for l in err.splitlines() if l.startswith("--> ")]
        received = []
        for l in err.splitlines():
            if len(l) >= 4 and l[:3].isdigit() and l[3] in " -":
                received.append(l)
        return sent, received

    def retr(self, remote, local, mode=None):
        if mode == "epsv":
            raise ClientError("wget uses PASV on IPv4; no EPSV switch")
        out, err = self.run(self.base(mode) + ["-O", local, self.url(remote)], "RETR " + remote)
        sent, received = self.parse(err)
        return Result(err, out, sent, received)

    def stor(self, local, remote, mode=None):
        raise ClientError("wget cannot upload")

    def listing(self, mode=None):
        d = self.tempdir()
        out, err = self.run(self.base(mode) + ["--no-remove-listing", "-nH", "-P", d, self.url("")], "LIST")
        with open(os.path.join(d, ".listing"), encoding="utf-8", errors="replace") as f:
            listing = f.read()
        sent, received = self.parse(err)
        return Result(err, listing, sent, received)


class TracingFTP(ftplib.FTP):
    """ftplib.FTP that records its control dialogue and can do EPSV on
    IPv4 (ftplib only uses EPSV for IPv6), and EPRT on IPv4 in active
    mode (eprt=True; ftplib only uses EPRT for IPv6)."""

    def __init__(self, *a, epsv=False, eprt=False, **kw):
        self.trace_sent = []
        self.trace_received = []
        self.use_epsv = epsv
        self.use_eprt = eprt
        self.last_passive = None
        super().__init__(*a, **kw)

    def sendport(self, host, port):
        if self.use_eprt:
            return self.sendeprt(host, port)
        return super().sendport(host, port)

    def putline(self, line):
        self.trace_sent.append("PASS ****" if line.upper().startswith("PASS ") else line)
        super().putline(line)

    def getline(self):
        line = super().getline()
        self.trace_received.append(line)
        return line

    def makepasv(self):
        if self.use_epsv:
            host, port = ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        else:
            host, port = super().makepasv()
        self.last_passive = (host, port)
        return host, port

    def transcript(self):
        return "\n".join(["> " + s for s in self.trace_sent] + ["< " + r for r in self.trace_received])


def open_ftplib(target, user=FTP_USER, password=FTP_PASSWORD, mode=None, login=True, cls=None):
    """A logged-in TracingFTP (mode as for client()); login=False leaves
    the login to the caller; cls: a TracingFTP subclass to use."""
    if mode == "port" and ":" in target.host:
        raise ClientError("ftplib sends EPRT, not PORT, over IPv6")
    ftp = (cls or TracingFTP)(timeout=timeout(), epsv=(mode == "epsv"), eprt=(mode == "eprt"))
    if mode == "pasv":
        ftp.trust_server_pasv_ipv4_address = True
    if mode in ACTIVE_MODES:
        ftp.set_pasv(False)
    ftp.connect(target.host, target.port)
    if login:
        ftp.login(user, password)
    return ftp


class FtpLib(_Client):
    name = "ftplib"

    def _go(self, mode, what, fn):
        ftp = None
        try:
            ftp = open_ftplib(self.target, self.user, self.password, mode)
            out = fn(ftp)
            ftp.quit()
        except (OSError, EOFError, ftplib.Error) as e:
            tr = ftp.transcript() if ftp else ""
            if ftp:
                ftp.close()
            raise ClientError("ftplib %s against %r failed: %r\n%s" % (what, self.target, e, tr))
        return Result(ftp.transcript(), out or "", ftp.trace_sent, ftp.trace_received)

    def retr(self, remote, local, mode=None):
        def fn(ftp):
            with open(local, "wb") as f:
                ftp.retrbinary("RETR " + remote, f.write, blocksize=1 << 16)
        return self._go(mode, "RETR " + remote, fn)

    def stor(self, local, remote, mode=None):
        def fn(ftp):
            with open(local, "rb") as f:
                ftp.storbinary("STOR " + remote, f, blocksize=1 << 16)
        return self._go(mode, "STOR " + remote, fn)

    def listing(self, mode=None):
        def fn(ftp):
            lines = []
            ftp.retrlines("LIST", lines.append)
            return "\n".join(lines)
        return self._go(mode, "LIST", fn)


_KINDS = {"curl": Curl, "lftp": Lftp, "wget": Wget, "ftplib": FtpLib}


def unsolicited_line(ftp, seconds):
    """The next line the server sends of its own accord (a 421 on idle),
    waiting seconds at most (scaled); ftp is closed afterwards."""
    ftp.sock.settimeout(seconds * procs.time_scale())
    try:
        return ftp.getline()
    finally:
        ftp.close()


def client(name, bed, target, **kw):
    return _KINDS[name](bed, target, **kw)


def url_host(host):
    """HOST as it goes in a URL or lftp's open: IPv6 literals bracketed."""
    return "[%s]" % host if ":" in host and not host.startswith("[") else host


def download_path(bed, tag):
    return os.path.join(bed.clientdir, "dl-%d-%s" % (next(_seq), tag))


def upload_name(tag):
    return "up-%d-%s-%d" % (os.getpid(), tag, next(_seq))


def assert_retr_intact(target, datafile):
    """A plain ftplib RETR of a test-bed DataFile through target; its bytes
    must be the file's (sha256)."""
    ftp = open_ftplib(target)
    h = hashlib.sha256()
    try:
        ftp.retrbinary("RETR " + datafile.name, h.update)
        ftp.quit()
    finally:
        ftp.close()
    assert h.hexdigest() == datafile.sha256, "RETR %s through %s: wrong bytes" % (
        datafile.name, target)


def assert_retr_1m(bed, run):
    """A new ftplib session through RUN (an ftpssh.Ftpssh) retrieves data-1M
    intact (sha256), and RUN is still alive afterwards."""
    ftp = open_ftplib(run.target)
    try:
        h = hashlib.sha256()
        ftp.retrbinary("RETR data-1M", h.update, blocksize=1 << 16)
        assert h.hexdigest() == bed.data["1M"].sha256, "RETR data-1M through %s: wrong sha256" % run.name
    finally:
        ftp.quit()
    run.assert_alive()


class RawRetr:
    """A raw FTP session (USER, PASS, TYPE I, EPSV, RETR) whose data
    connection has a small receive buffer, so that the bytes wait in the
    proxy rather than in our kernel. The caller reads .data (or never does)
    and closes."""

    def __init__(self, target, name, rcvbuf=4096, user=FTP_USER, password=FTP_PASSWORD):
        self.ctl = socket.create_connection((target.host, target.port), timeout=timeout())
        self.f = self.ctl.makefile("rb")
        self.data = None
        self.expect(b"220")
        for cmd, code in (("USER " + user, b"331"), ("PASS " + password, b"230"),
                          ("TYPE I", b"200"), ("EPSV", b"229")):
            self.ctl.sendall(cmd.encode() + b"\r\n")
            line = self.expect(code)
        port = int(line.split(b"|")[3])
        self.data = socket.socket(socket.AF_INET6 if ":" in target.host else socket.AF_INET)
        # before connect, so that the window offered is small from the start
        self.data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.data.settimeout(timeout())
        self.data.connect((target.host, port))
        self.ctl.sendall(b"RETR " + name.encode() + b"\r\n")
        self.expect(b"150")

    def expect(self, code):
        """The next final reply, which must have CODE."""
        while True:
            line = self.f.readline()
            if not line:
                raise AssertionError("control connection closed waiting for %r" % code)
            if line[:3] == code and line[3:4] == b" ":
                return line
            if line[:1] in b"45" and line[3:4] == b" ":
                raise AssertionError("%r while waiting for %r" % (line, code))

    def close(self):
        for s in (self.data, self.ctl):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass


# libssh2 puts at most this much channel data in one SSH packet
# (_libssh2_channel_write in 1.10 and 1.11; mux.h's MUX_PACKET_DATA), and
# OpenSSH's channels take packets that large.
LIBSSH2_PACKET_DATA = 32700


def assert_upload_packets(writes, size, bound):
    """WRITES, the proxy's write syscalls during an upload of SIZE bytes,
    count its SSH packets (it writes little else meanwhile): at least one
    per full packet's worth, and fewer than BOUND per full packet's worth."""
    full = size / LIBSSH2_PACKET_DATA
    print("%d write syscalls for %.0f full packets' worth" % (writes, full))
    assert writes >= full * 0.99, "fewer writes than packets: the count is not the packets"
    assert writes < full * bound, "%d writes for %.0f full packets" % (writes, full)
