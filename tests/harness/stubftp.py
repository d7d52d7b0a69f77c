"""A small FTP server on loopback whose passive replies name another
loopback address than its control connection, and whose FEAT advertises
TLS: for the --data-host and AUTH-hiding tests (issue 5).

    stub = StubFtp(pasv_host="127.0.0.2")   # control on 127.0.0.1
    stub.files["blob"] = b"..."
    ... ftpssh -L ...:127.0.0.1:stub.port ...
    stub.lines          # every command line received, in order
    stub.pasv_ports     # data ports offered in 227s (listening on pasv_host)
    stub.epsv_ports     # data ports offered in 229s (on the control host)
    stub.close()

PASV opens a listener on pasv_host and says so in its 227, as a server
that hands data to another host does; EPSV (RFC 2428: no address) opens
one on the control connection's host. Logging in as user "noepsv" makes
EPSV answer 502, so a client (or ftpssh) must fall back to PASV.

It speaks what curl, lftp and ftplib send for a login, a RETR, a STOR and
FEAT: USER PASS SYST FEAT PWD CWD TYPE MODE STRU OPTS NOOP SIZE MDTM PASV
EPSV RETR STOR AUTH PBSZ PROT QUIT LIST NLST; anything else gets 502,
except HELP: a multi-line 214 of help_bytes bytes, for a client that does
not read its replies (test_active_drops.py; stub.help_sent counts what the
stub managed to send). Every socket
has a timeout; a data listener nobody connects to gives up after
accept_timeout seconds (then 425), so a test of a wrong data address ends
quickly (accept_timeout is scaled like every harness time limit).

StubFtp(strict=True, epsv=False) is the server of issue 15: after PASV
(EPSV answers 502) it reads no further command until its data port is
connected, and after 10 s without a connection it answers "550 Requested
action not taken: internal server error" and closes, as that server
did. A client that sends TYPE I between PORT and RETR (curl) stalls it
unless ftpssh connects to the data port before it sends anything else.
stub.strict_timeouts counts those 550s.
"""

import socket
import threading
import time

from . import procs

IO_TIMEOUT = 30.0

# What FEAT lists: TLS among ordinary features, in the shapes servers use.
FEAT_LINES = (
    " AUTH TLS",
    " AUTH SSL",
    " auth tls-c",
    " AUTH TLS;TLS-C;SSL;TLS-P",
    " EPSV",
    " MDTM",
    " PASV",
    " PBSZ",
    " PROT",
    " SIZE",
    " UTF8",
    " AUTHX-NOT-TLS",
)


class StubFtp:
    kind = "stubftp"
    banner = "stubftp"

    def __init__(self, pasv_host="127.0.0.2", accept_timeout=3.0, strict=False, epsv=True,
                 strict_timeout=10.0, help_bytes=64 << 10):
        self.host = "127.0.0.1"
        self.strict = strict
        self.epsv = epsv
        self.strict_timeout = strict_timeout  # not scaled: it is the server's own
        self.strict_timeouts = 0
        self.pasv_host = pasv_host
        self.accept_timeout = accept_timeout * procs.time_scale()
        self.files = {}
        self.stored = {}
        self.lines = []
        self.pasv_ports = []
        self.epsv_ports = []
        self.data_accepted = 0
        self.help_bytes = help_bytes
        self.help_sent = 0
        self.stopping = False
        self._lock = threading.Lock()
        self._socks = set()
        self._threads = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((self.host, 0))
        self.listener.listen(32)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="stubftp-accept",
                                          daemon=True)
        self._acceptor.start()

    def __repr__(self):
        return "<stubftp on 127.0.0.1:%d, 227 names %s>" % (self.port, self.pasv_host)

    def commands(self):
        with self._lock:
            return [l.split(" ", 1)[0].upper() for l in self.lines]

    def _accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            t = threading.Thread(target=self._serve, args=(sock,), name="stubftp-session",
                                 daemon=True)
            with self._lock:
                self._socks.add(sock)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, sock):
        try:
            _Session(self, sock).run()
        except (OSError, UnicodeError):
            pass
        finally:
            with self._lock:
                self._socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(5)
        for t in threads:
            t.join(2)


class _Session:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.user = None
        self.data = None
        self.ready = None  # strict: the data connection taken right after PASV
        self.guard = None  # 127.0.0.1 at the data port, held (see listen)

    def send(self, text):
        self.sock.sendall(text.encode("latin-1"))

    def close_data(self):
        if self.ready is not None:
            try:
                self.ready.close()
            except OSError:
                pass
            self.ready = None
        if self.data is not None:
            try:
                self.data.close()
            except OSError:
                pass
            self.data = None
        if self.guard is not None:
            self.guard.close()
            self.guard = None

    def listen(self, host):
        """A data listener on HOST; when HOST is not the control host
        (127.0.0.1), also a socket bound, never listening, to the control
        host at the same port, held until the next listen or the session's
        end: [127.0.0.2]:P does not stop anyone from listening on
        127.0.0.1:P, and a test that has ftpssh dial the control host's P
        instead of the 227's address expects that dial refused, not met
        by an unrelated service (sshd, an FTP server) that got P too."""
        self.close_data()
        ctl = self.server.host
        for _ in range(50):
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.bind((host, 0))
            port = ls.getsockname()[1]
            if host == ctl:
                break
            guard = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                guard.bind((ctl, port))
            except OSError:
                guard.close()
                ls.close()
                continue   # something holds the control host's P: another port
            self.guard = guard
            break
        else:
            raise RuntimeError("no data port on %s with %s free at it" % (host, ctl))
        ls.listen(2)
        ls.settimeout(self.server.accept_timeout)
        self.data = ls
        return port

    def wait_data(self):
        """strict: take the data connection before reading anything else;
        False (550 sent) when none comes in time: the session ends."""
        ls, self.data = self.data, None
        ls.settimeout(self.server.strict_timeout)
        try:
            conn, _ = ls.accept()
        except OSError:
            with self.server._lock:
                self.server.strict_timeouts += 1
            self.send("550 Requested action not taken: internal server error\r\n")
            return False
        finally:
            ls.close()
        with self.server._lock:
            self.server.data_accepted += 1
        conn.settimeout(IO_TIMEOUT)
        self.ready = conn
        return True

    def data_conn(self, what):
        if self.ready is not None:
            conn, self.ready = self.ready, None
            self.send("150 Opening BINARY mode data connection for %s.\r\n" % what)
            return conn
        if self.data is None:
            self.send("425 Use PASV or EPSV first.\r\n")
            return None
        ls, self.data = self.data, None
        self.send("150 Opening BINARY mode data connection for %s.\r\n" % what)
        try:
            conn, _ = ls.accept()
        except OSError:
            self.send("425 No data connection.\r\n")
            return None
        finally:
            ls.close()
        with self.server._lock:
            self.server.data_accepted += 1
        conn.settimeout(IO_TIMEOUT)
        return conn

    def retr(self, name):
        content = self.server.files.get(name)
        if content is None:
            self.send("550 No such file.\r\n")
            return
        conn = self.data_conn(name)
        if conn is None:
            return
        try:
            conn.sendall(content)
            conn.shutdown(socket.SHUT_WR)
            # bounded wait for the far side's close: the 226 must not
            # overtake the data on its way through the tunnel
            deadline = time.monotonic() + IO_TIMEOUT
            while time.monotonic() < deadline and conn.recv(65536):
                pass
        except OSError:
            self.send("426 Connection closed; transfer aborted.\r\n")
            return
        finally:
            conn.close()
        self.send("226 Transfer complete.\r\n")

    def listing(self, names_only):
        conn = self.data_conn("file list")
        if conn is None:
            return
        lines = []
        for name, content in sorted(self.server.files.items()):
            lines.append(name if names_only else
                         "-rw-r--r--    1 0        0        %10d Jan 01  2024 %s" % (len(content), name))
        try:
            conn.sendall("".join(l + "\r\n" for l in lines).encode("latin-1"))
        except OSError:
            self.send("426 Connection closed; transfer aborted.\r\n")
            return
        finally:
            conn.close()
        self.send("226 Directory send OK.\r\n")

    def stor(self, name):
        conn = self.data_conn(name)
        if conn is None:
            return
        parts = []
        try:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                parts.append(b)
        except OSError:
            self.send("426 Connection closed; transfer aborted.\r\n")
            return
        finally:
            conn.close()
        with self.server._lock:
            self.server.stored[name] = b"".join(parts)
        self.send("226 Transfer complete.\r\n")

    def help(self):
        line = "214-%-70s\r\n" % "USER PASS SYST FEAT PWD CWD TYPE PASV EPSV RETR STOR LIST QUIT"
        chunk = (line * 1024).encode("latin-1")
        for _ in range(max(1, self.server.help_bytes // len(chunk))):
            self.sock.sendall(chunk)
            with self.server._lock:
                self.server.help_sent += len(chunk)
        self.send("214 Help OK.\r\n")

    def run(self):
        self.sock.settimeout(IO_TIMEOUT)
        f = self.sock.makefile("rb")
        self.send("220 stubftp ready.\r\n")
        try:
            while not self.server.stopping:
                raw = f.readline(8192)
                if not raw:
                    break
                text = raw.decode("latin-1").rstrip("\r\n")
                with self.server._lock:
                    self.server.lines.append("PASS ****" if text.upper().startswith("PASS ") else text)
                verb, _, arg = text.partition(" ")
                verb = verb.upper()
                if self.dispatch(verb, arg):
                    break
        finally:
            self.close_data()

    def dispatch(self, verb, arg):
        """Answer one command; True ends the session."""
        if verb == "USER":
            self.user = arg
            self.send("331 Please specify the password.\r\n")
        elif verb == "PASS":
            self.send("230 Login successful.\r\n")
        elif verb == "SYST":
            self.send("215 UNIX Type: L8\r\n")
        elif verb == "FEAT":
            self.send("211-Features:\r\n" + "".join(l + "\r\n" for l in FEAT_LINES) + "211 End\r\n")
        elif verb == "AUTH":
            # Never reached through ftpssh; if it were, the client would
            # start TLS and the test would see it fail.
            self.send("234 Proceed with negotiation.\r\n")
        elif verb in ("PBSZ", "PROT"):
            self.send("503 PBSZ and PROT only after AUTH.\r\n")
        elif verb == "PWD":
            self.send('257 "/" is the current directory\r\n')
        elif verb == "CWD":
            self.send("250 Directory successfully changed.\r\n")
        elif verb in ("TYPE", "MODE", "STRU", "OPTS", "NOOP"):
            self.send("200 %s ok.\r\n" % verb)
        elif verb == "SIZE":
            content = self.server.files.get(arg)
            self.send("213 %d\r\n" % len(content) if content is not None else "550 No such file.\r\n")
        elif verb == "MDTM":
            self.send("213 20240101000000\r\n" if arg in self.server.files else "550 No such file.\r\n")
        elif verb == "PASV":
            port = self.listen(self.server.pasv_host)
            with self.server._lock:
                self.server.pasv_ports.append(port)
            h = self.server.pasv_host.replace(".", ",")
            self.send("227 Entering Passive Mode (%s,%d,%d).\r\n" % (h, port >> 8, port & 255))
            if self.server.strict and not self.wait_data():
                return True
        elif verb == "EPSV":
            if self.user == "noepsv" or not self.server.epsv:
                self.send("502 EPSV not implemented.\r\n")
            else:
                port = self.listen(self.server.host)
                with self.server._lock:
                    self.server.epsv_ports.append(port)
                self.send("229 Entering Extended Passive Mode (|||%d|)\r\n" % port)
                if self.server.strict and not self.wait_data():
                    return True
        elif verb == "RETR":
            self.retr(arg)
        elif verb in ("LIST", "NLST"):
            self.listing(verb == "NLST")
        elif verb == "STOR":
            self.stor(arg)
        elif verb == "QUIT":
            self.send("221 Goodbye.\r\n")
            return True
        elif verb == "HELP":
            self.help()
        else:
            self.send("502 Command not implemented.\r\n")
        return False
