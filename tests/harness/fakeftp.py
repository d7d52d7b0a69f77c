"""A small scripted FTP server on 127.0.0.1 for hostile-peer tests.

It speaks just enough FTP for ftplib (greeting, USER/PASS, TYPE, NOOP,
SYST, PASV/EPSV, RETR, QUIT) and answers PASV/EPSV from a script chosen by
the USER name, so many sessions with different scripts can share one
server (and one ftpssh) at the same time:

    fake = FakeFtp()
    fake.scenarios["range"] = Scenario(pasv=["227 Entering Passive Mode (256,0,0,1,4,1).\\r\\n"])
    fake.files["blob"] = b"..."
    ... ftp.login("range", "x"); ftp.sendcmd("PASV") ...
    fake.close()

A script is a list of reply texts used by the first PASV (or EPSV)
commands of a session, in order; later ones get the ordinary valid reply.
Texts are sent exactly as written (latin-1, so "\\xff" is one byte; no
CRLF is added, so a text without one is a line that never ends). They may
name a real data listener the fake opens on 127.0.0.1 for that command:
{h} is "127,0,0,1", {p1},{p2} the 227 port bytes, {port} the port; a RETR
after such a reply sends the named file over it.

Every socket has a timeout and every wait is bounded; close() stops the
accept thread and every session.
"""

import socket
import threading
import time

VALID_227 = "227 Entering Passive Mode ({h},{p1},{p2}).\r\n"
VALID_229 = "229 Entering Extended Passive Mode (|||{port}|)\r\n"
IO_TIMEOUT = 60.0
ACCEPT_TIMEOUT = 15.0


class Scenario:
    def __init__(self, pasv=(), epsv=(), after_retr_close=False):
        self.pasv = list(pasv)
        self.epsv = list(epsv)
        self.after_retr_close = after_retr_close


class SessionRecord:
    """What one control connection did, for the tests to look at."""

    def __init__(self, sid, peer):
        self.sid = sid
        self.peer = peer
        self.user = None
        self.lines = []          # raw command lines received, terminator included
        self.data_ports = []     # every data listener port offered
        self.data_accepted = 0   # data connections taken
        self.closed = threading.Event()  # the control connection ended

    def commands(self):
        return [l.split(b" ", 1)[0].strip().upper().decode("latin-1") for l in self.lines]


class _Session:
    def __init__(self, server, sock, rec):
        self.server = server
        self.sock = sock
        self.rec = rec
        self.scn = Scenario()
        self.used = {"PASV": 0, "EPSV": 0}
        self.data = None  # listening socket of the last PASV/EPSV

    def send(self, text):
        self.sock.sendall(text.encode("latin-1") if isinstance(text, str) else text)

    def close_data(self):
        if self.data is not None:
            try:
                self.data.close()
            except OSError:
                pass
            self.data = None

    def passive(self, verb):
        self.close_data()
        script = self.scn.pasv if verb == "PASV" else self.scn.epsv
        k = self.used[verb]
        self.used[verb] += 1
        text = script[k] if k < len(script) else (VALID_227 if verb == "PASV" else VALID_229)
        if "{" in text:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.bind(("127.0.0.1", 0))
            ls.listen(4)
            ls.settimeout(ACCEPT_TIMEOUT)
            port = ls.getsockname()[1]
            self.data = ls
            self.rec.data_ports.append(port)
            text = text.format(h="127,0,0,1", p1=port >> 8, p2=port & 255, port=port)
        self.send(text)

    def retr(self, name):
        content = self.server.files.get(name)
        if content is None:
            self.send("550 No such file.\r\n")
            return
        if self.data is None:
            self.send("425 Use PASV or EPSV first.\r\n")
            return
        ls, self.data = self.data, None
        self.send("150 Opening BINARY mode data connection for %s (%d bytes).\r\n" % (name, len(content)))
        try:
            conn, _ = ls.accept()
        except OSError:
            ls.close()
            self.send("425 No data connection.\r\n")
            return
        ls.close()
        self.rec.data_accepted += 1
        try:
            conn.settimeout(IO_TIMEOUT)
            conn.sendall(content)
            conn.shutdown(socket.SHUT_WR)
            # Wait (bounded) for the far side's close, so the 226 cannot
            # overtake the data on its way through the tunnel.
            deadline = time.monotonic() + IO_TIMEOUT
            while time.monotonic() < deadline and conn.recv(65536):
                pass
        except OSError:
            conn.close()
            self.send("426 Connection closed; transfer aborted.\r\n")
            return
        conn.close()
        self.send("226 Transfer complete.\r\n")

    def run(self):
        self.sock.settimeout(IO_TIMEOUT)
        f = self.sock.makefile("rb")
        self.send("220 fakeftp ready.\r\n")
        while not self.server.stopping:
            line = f.readline(65536)
            if not line:
                break
            self.rec.lines.append(line)
            text = line.decode("latin-1").rstrip("\r\n")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb == "USER":
                self.rec.user = arg
                self.scn = self.server.scenarios.get(arg, Scenario())
                self.send("331 Please specify the password.\r\n")
            elif verb == "PASS":
                self.send("230 Login successful.\r\n")
            elif verb == "TYPE":
                self.send("200 Switching to Binary mode.\r\n")
            elif verb == "NOOP":
                self.send("200 NOOP ok.\r\n")
            elif verb == "SYST":
                self.send("215 UNIX Type: L8\r\n")
            elif verb in ("PASV", "EPSV"):
                self.passive(verb)
            elif verb == "RETR":
                self.retr(arg)
            elif verb == "QUIT":
                self.send("221 Goodbye.\r\n")
                break
            else:
                self.send("502 Command not implemented.\r\n")


class FakeFtp:
    kind = "fakeftp"

    def __init__(self):
        self.host = "127.0.0.1"
        self.scenarios = {}
        self.files = {}
        self.records = []
        self.stopping = False
        self._lock = threading.Lock()
        self._socks = set()
        self._threads = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="fakeftp-accept", daemon=True)
        self._acceptor.start()

    def __repr__(self):
        return "<fakeftp on 127.0.0.1:%d>" % self.port

    def _accept_loop(self):
        sid = 0
        while not self.stopping:
            try:
                sock, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sid += 1
            rec = SessionRecord(sid, peer)
            with self._lock:
                self.records.append(rec)
                self._socks.add(sock)
                self._threads = [t for t in self._threads if t.is_alive()]
                t = threading.Thread(target=self._serve, args=(sock, rec), name="fakeftp-%d" % sid, daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, sock, rec):
        s = _Session(self, sock, rec)
        try:
            s.run()
        except (OSError, UnicodeError):
            pass
        finally:
            s.close_data()
            with self._lock:
                self._socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass
            rec.closed.set()

    def sessions_of(self, user):
        with self._lock:
            return [r for r in self.records if r.user == user]

    def open_sessions(self):
        with self._lock:
            return [r for r in self.records if not r.closed.is_set()]

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
