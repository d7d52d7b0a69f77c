"""Hostile and broken peers (issue 3), one ftpssh of their own.

Server side: a scripted fake FTP server (harness/fakeftp.py) behind the
real sshd sends bad PASV/EPSV replies. Each one must reach the client as
ftpssh's own 425 (or 421 for an over-long line, which ends the session),
the session must go on where the protocol allows (NOOP gets 200, a retried
PASV/EPSV is rewritten and its RETR carries the right bytes), and ftpssh
must keep serving a second session opened before. Odd but valid shapes
(no parentheses, "=", other wording, multi-line, bare LF, RFC 2428
delimiters ! # ~) must be rewritten to 127.0.0.1 and a port that is not
the server's, and the transfer must carry the right bytes.

Client side, against a real vsftpd: a client that drops a 64 MiB RETR
half-way, one that never connects to its data port (ftpssh runs with
--data-timeout=2: the port must be closed afterwards), one that connects
twice (second refused or closed without data), ABOR during RETR, and a
64 KiB command line without a newline.

All of it through one ftpssh (-L to the fake server and to vsftpd), run
with -vv; after each test it must be alive with no sanitizer report, and
at the end of the module it must exit cleanly on SIGTERM.
"""

import ftplib
import hashlib
import os
import re
import socket
import time

import pytest

from harness import abuse, fakeftp, ftpssh, procs
from harness.fakeftp import Scenario

pytestmark = pytest.mark.ftpssh_only

# Short, so the timeout path runs often; longer under valgrind, whose
# slow event loop could otherwise let the timer win over a connection
# already waiting in the accept queue (libuv runs due timers first).
DATA_TIMEOUT = int(round(2 * procs.time_scale()))
BIG = "hostile-big-64M"
BLOB_SIZE = 200 * 1024

REWRITTEN_227 = re.compile(r"^227 Entering Passive Mode \(127,0,0,1,(\d+),(\d+)\)\.$")
REWRITTEN_229 = re.compile(r"^229 Entering Extended Passive Mode \(\|\|\|(\d+)\|\)$")


class Hostile:
    def __init__(self, bed):
        self.bed = bed
        self.fake = fakeftp.FakeFtp()
        self.blob = os.urandom(BLOB_SIZE)
        self.blob_sha = hashlib.sha256(self.blob).hexdigest()
        self.fake.files["blob"] = self.blob
        self.vsftpd = bed.ftp_server("vsftpd")
        # A 64 MiB file of zeros (sparse: no time spent writing it) for the
        # transfers that get cut off; nobody checks its bytes.
        self.big_path = self.vsftpd.file(BIG)
        with open(self.big_path, "wb") as f:
            f.truncate(64 << 20)
        os.chmod(self.big_path, 0o444)
        self.proxy = ftpssh.Ftpssh(bed, [self.fake, self.vsftpd],
                                   extra=["-vv", "--data-timeout=%d" % DATA_TIMEOUT])
        self.fake_target, self.vs_target = self.proxy.targets
        self._n = 0

    def user(self, tag, scenario):
        """A fresh fake-server login name bound to SCENARIO."""
        self._n += 1
        name = "%s-%d" % (tag, self._n)
        self.fake.scenarios[name] = scenario
        return name

    def stderr_tail(self, n=6000):
        return self.proxy.stderr()[-n:]

    def close(self):
        try:
            self.proxy.stop(check=True)
        finally:
            self.fake.close()
            try:
                os.unlink(self.big_path)
            except OSError:
                pass


@pytest.fixture(scope="module")
def hostile(bed):
    if ftpssh.mode() != "ftpssh":
        pytest.skip("needs ftpssh")
    h = Hostile(bed)
    yield h
    h.close()


@pytest.fixture
def hp(hostile):
    """The module's ftpssh, checked alive and clean after each test."""
    hostile.proxy.assert_alive()
    yield hostile
    hostile.proxy.assert_alive()


def other_session(hp):
    """A session on vsftpd opened before the misbehaviour under test."""
    return abuse.login(hp.vs_target)


def other_session_works(hp, ftp):
    f = hp.bed.data["1M"]
    abuse.retr_check(ftp, f.name, f.sha256, f.size)
    ftp.quit()
    ftp.close()


def fake_retr(hp, ftp, rec, verb):
    """RETR blob on a fake-server session after a rewritten VERB reply;
    the reply must name 127.0.0.1 and not the fake server's own port."""
    abuse.retr_check(ftp, "blob", hp.blob_sha, BLOB_SIZE)
    reply = [l for l in ftp.trace_received if l[:3] in ("227", "229")][-1]
    m = (REWRITTEN_227 if verb == "PASV" else REWRITTEN_229).match(reply)
    assert m, "%s: the client got %r, not ftpssh's rewritten reply\n%s" % (verb, reply, hp.stderr_tail())
    port = int(m.group(1)) * 256 + int(m.group(2)) if verb == "PASV" else int(m.group(1))
    assert ftp.last_passive == ("127.0.0.1", port)
    assert port not in rec.data_ports, "%s: the client was given the server's own data port %d" % (verb, port)
    assert rec.data_accepted >= 1, "the fake server never got the data connection"
    return port


# --- bad passive replies ------------------------------------------------------

# id, verb, reply text (fakeftp template), words the 425 must contain
BAD_REPLIES = [
    ("227-byte-over-255", "PASV", "227 Entering Passive Mode (256,0,0,1,{p1},{p2}).\r\n", "range"),
    ("227-port-byte-over-255", "PASV", "227 Entering Passive Mode ({h},273,{p2}).\r\n", "range"),
    ("227-huge-number", "PASV", "227 Entering Passive Mode (99999999999999999999,0,0,1,{p1},{p2}).\r\n", "range"),
    ("227-port-0", "PASV", "227 Entering Passive Mode (127,0,0,1,0,0).\r\n", "range"),
    ("227-missing-field", "PASV", "227 Entering Passive Mode (127,0,0,1,{p1}).\r\n", "syntax"),
    ("227-no-numbers", "PASV", "227 Entering Passive Mode\r\n", "syntax"),
    ("227-garbage-in-tuple", "PASV", "227 Entering Passive Mode (127,0,0,x1,{p1},{p2}).\r\n", "syntax"),
    ("227-non-ascii-in-tuple", "PASV", "227 Entering Passive Mode (127,0,0,\xb9,{p1},{p2}).\r\n", "not allowed"),
    ("227-multiline-no-good-tuple", "PASV", "227-Entering Passive Mode (1,2,3,4,5)\r\n227 (127,0,0,1,0,0)\r\n", None),
    # Not a reply line at all to the RFC 959 tracker: before 9dfb106 it
    # went to the client untouched (naming the server's own port) and the
    # PASV stayed in the command FIFO, so the next PASV was not rewritten.
    ("227-garbage-after-code", "PASV", "227garbage ({h},{p1},{p2}).\r\n", None),
    ("229-port-0", "EPSV", "229 Entering Extended Passive Mode (|||0|)\r\n", "range"),
    ("229-port-70000", "EPSV", "229 Entering Extended Passive Mode (|||70000|)\r\n", "range"),
    ("229-missing-port", "EPSV", "229 Entering Extended Passive Mode (|||)\r\n", None),
    ("229-no-parentheses", "EPSV", "229 Entering Extended Passive Mode |||{port}|\r\n", "syntax"),
    ("229-mismatched-delimiters", "EPSV", "229 Entering Extended Passive Mode (|!|{port}|)\r\n", "delimiter"),
    ("229-mismatched-last-delimiter", "EPSV", "229 Entering Extended Passive Mode (|||{port}!)\r\n", "delimiter"),
    ("229-non-ascii-delimiter", "EPSV", "229 Entering Extended Passive Mode (\xa7\xa7\xa7{port}\xa7)\r\n", "not allowed"),
    ("229-garbage-after-code", "EPSV", "229garbage (|||{port}|)\r\n", None),
]

@pytest.mark.parametrize("case,verb,text,reason", [pytest.param(*c, id=c[0]) for c in BAD_REPLIES])
def test_bad_passive_reply_gets_425_and_session_goes_on(hp, case, verb, text, reason):
    other = other_session(hp)
    scn = Scenario(pasv=[text]) if verb == "PASV" else Scenario(epsv=[text])
    user = hp.user(case, scn)
    ftp = abuse.login(hp.fake_target, user, "x", epsv=(verb == "EPSV"))
    try:
        rec = hp.fake.sessions_of(user)[-1]
        try:
            got = ftp.sendcmd(verb)
        except ftplib.error_temp as e:
            got = str(e)
        assert got.startswith("425 ") and "ftpssh" in got, (
            "%s: %s answered by %r, want ftpssh's 425\n%s" % (case, verb, got, hp.stderr_tail()))
        assert ("use EPSV" if verb == "PASV" else "use PASV") in got, got
        if reason:
            assert reason in got, "%s: 425 does not say %r: %r" % (case, reason, got)
        # In step: NOOP's 200, then a retried VERB (the fake now answers
        # it properly) is rewritten and carries the file.
        abuse.noop_ok(ftp)
        fake_retr(hp, ftp, rec, verb)
        abuse.noop_ok(ftp)
        ftp.quit()
    finally:
        ftp.close()
    other_session_works(hp, other)


# --- odd but valid passive replies ----------------------------------------------

VALID_REPLIES = [
    ("227-no-parentheses", "PASV", "227 Entering Passive Mode {h},{p1},{p2}\r\n"),
    ("227-equals", "PASV", "227 ={h},{p1},{p2}\r\n"),
    ("227-listen-wording", "PASV", "227 passively listen to {h},{p1},{p2}\r\n"),
    ("227-spaces", "PASV", "227 Entering Passive Mode (127, 0, 0, 1, {p1}, {p2})\r\n"),
    # ftpssh dials the server's data port on the FTP server's host as the
    # gateway sees it, whatever address the 227 names (NAT, masquerading).
    ("227-other-address", "PASV", "227 Entering Passive Mode (10,9,8,7,{p1},{p2}).\r\n"),
    ("227-multiline-tuple-last", "PASV", "227-Entering Passive Mode\r\n227-ready\r\n227 ({h},{p1},{p2})\r\n"),
    ("227-multiline-tuple-first", "PASV", "227-Entering Passive Mode ({h},{p1},{p2})\r\n227 OK\r\n"),
    ("227-bare-lf", "PASV", "227 Entering Passive Mode ({h},{p1},{p2}).\n"),
    # Non-ASCII outside the numbers is a localized text, not an error
    # (ftpparse's unit tests accept it on purpose).
    ("227-non-ascii-text", "PASV", "227 Entr\xe9e en mode passif ({h},{p1},{p2})\r\n"),
    ("229-bang", "EPSV", "229 Entering Extended Passive Mode (!!!{port}!)\r\n"),
    ("229-hash", "EPSV", "229 Entering Extended Passive Mode (###{port}#)\r\n"),
    ("229-tilde", "EPSV", "229 Entering Extended Passive Mode (~~~{port}~)\r\n"),
    ("229-multiline", "EPSV", "229-Extended Passive Mode\r\n229 Entering Extended Passive Mode (|||{port}|)\r\n"),
]


@pytest.mark.parametrize("case,verb,text", [pytest.param(*c, id=c[0]) for c in VALID_REPLIES])
def test_odd_valid_passive_reply_rewritten_and_transfers(hp, case, verb, text):
    scn = Scenario(pasv=[text]) if verb == "PASV" else Scenario(epsv=[text])
    user = hp.user(case, scn)
    ftp = abuse.login(hp.fake_target, user, "x", epsv=(verb == "EPSV"))
    try:
        rec = hp.fake.sessions_of(user)[-1]
        fake_retr(hp, ftp, rec, verb)
        assert rec.data_accepted == 1
        abuse.noop_ok(ftp)
        ftp.quit()
    finally:
        ftp.close()


# --- over-long server line ---------------------------------------------------------

LONG = "A" * (64 << 10)


@pytest.mark.parametrize("text", [
    pytest.param(LONG, id="64KiB-no-newline"),
    pytest.param("227-Entering Passive Mode\r\n" + LONG, id="64KiB-inside-multiline"),
    pytest.param(LONG + "\r\n", id="64KiB-then-newline"),
])
def test_over_long_server_line_gets_421_and_ends_session(hp, text):
    other = other_session(hp)
    user = hp.user("long", Scenario(pasv=[text]))
    ftp = abuse.login(hp.fake_target, user, "x")
    rec = hp.fake.sessions_of(user)[-1]
    try:
        with pytest.raises(ftplib.error_temp) as e:
            ftp.sendcmd("PASV")
        got = str(e.value)
        assert got.startswith("421 ") and "ftpssh" in got and "long" in got, (
            "over-long line: %r\n%s" % (got, hp.stderr_tail()))
        # ...and the session ends: EOF on the control connection, nothing
        # of the long line relayed.
        ftp.sock.settimeout(10 * procs.time_scale())
        rest = b""
        while len(rest) <= len(LONG):
            b = ftp.sock.recv(1 << 16)
            if not b:
                break
            rest += b
        assert rest == b"", "after the 421 the client got %d more bytes: %r" % (len(rest), rest[:80])
    finally:
        ftp.close()
    # The tunnel to the fake server is closed too (sshd closes its side).
    assert rec.closed.wait(10 * procs.time_scale()), "the fake server's connection is still open"
    other_session_works(hp, other)


# --- what ftpssh answers itself, and what it leaves alone ------------------------

@pytest.mark.parametrize("mech", ["TLS", "SSL"])
def test_auth_answered_by_ftpssh(hp, mech):
    user = hp.user("auth", Scenario())
    ftp = abuse.login(hp.fake_target, user, "x")
    try:
        with pytest.raises(ftplib.error_perm) as e:
            ftp.sendcmd("AUTH " + mech)
        got = str(e.value)
        assert got.startswith("534 ") and "ftpssh" in got and "SSH" in got, got
        abuse.noop_ok(ftp)
        ftp.quit()
    finally:
        ftp.close()
    rec = hp.fake.sessions_of(user)[-1]
    assert "AUTH" not in rec.commands(), "AUTH reached the server: %r" % rec.lines


def test_telnet_iac_bytes_pass_untouched(hp):
    user = hp.user("iac", Scenario())
    ftp = abuse.login(hp.fake_target, user, "x")
    line = b"\xff\xf4\xff\xf2NOOP\r\n"
    try:
        ftp.sock.sendall(line)
        r = abuse.read_reply(ftp)
        assert r.startswith("502"), "the fake server's answer: %r" % r
        abuse.noop_ok(ftp)
        ftp.quit()
    finally:
        ftp.close()
    rec = hp.fake.sessions_of(user)[-1]
    assert line in rec.lines, "the server got %r, not %r" % (rec.lines[2:], line)


# --- client-side abuse against a real server (vsftpd) -------------------------------

@pytest.mark.parametrize("rst", [False, True], ids=["close", "rst"])
def test_client_disconnects_mid_retr(hp, rst):
    other = other_session(hp)
    abuse.op_disconnect_mid_retr(hp.vs_target, BIG, read=4 << 20, rst=rst)
    other_session_works(hp, other)
    # and a new session transfers normally
    f = hp.bed.data["1M"]
    abuse.op_normal(hp.vs_target, f)


def test_unused_data_port_closes_after_data_timeout(hp):
    pid = hp.proxy.pid
    ftp = abuse.login(hp.vs_target)
    try:
        _, port = abuse.pasv(ftp)
        t0 = time.monotonic()
        assert port in abuse.listening_ports(pid), "the offered port %d is not listening" % port
        gone = abuse.wait_until(lambda: port not in abuse.listening_ports(pid),
                                (DATA_TIMEOUT + 5) * procs.time_scale())
        waited = time.monotonic() - t0
        assert gone, "port %d still listening %.1fs after PASV (--data-timeout=%d)\n%s" % (
            port, waited, DATA_TIMEOUT, hp.stderr_tail())
        assert waited >= DATA_TIMEOUT - 0.5, "port %d closed after %.1fs, before its timeout" % (port, waited)
        assert abuse.connect_refused(port), "port %d still accepts connections" % port
        abuse.noop_ok(ftp)
        # the session goes on: a new PASV and a transfer
        f = hp.bed.data["1M"]
        abuse.retr_check(ftp, f.name, f.sha256, f.size)
        ftp.quit()
    finally:
        ftp.close()
    assert re.search(r"no data connection within %d s; port closed" % DATA_TIMEOUT, hp.proxy.stderr())


def listener_inode(pid, port):
    """The inode of PID's one listening socket on PORT."""
    found = [i for i, (_, p) in abuse.listening_sockets(pid).items() if p == port]
    assert len(found) == 1, "ftpssh's listeners on port %d: %s" % (port, found)
    return found[0]


def test_new_pasv_closes_previous_unused_port(hp):
    # ftpssh closes the old port and then bind(0)s the new one, so the
    # kernel may hand it the same number again (about 1 in 7000): that is
    # fine. "The first port is closed" is therefore asserted on its
    # socket, by inode, and on the number only when the numbers differ.
    pid = hp.proxy.pid
    ftp = abuse.login(hp.vs_target)
    try:
        _, first = abuse.pasv(ftp)
        first_inode = listener_inode(pid, first)
        _, second = abuse.pasv(ftp)
        # At once, well before --data-timeout.
        assert abuse.wait_until(lambda: first_inode not in procs.socket_inodes(pid), 1.0), (
            "the first port's socket (port %d) is still open after the second PASV" % first)
        second_inode = listener_inode(pid, second)
        if first != second:
            assert first not in abuse.listening_ports(pid)
            assert abuse.connect_refused(first)
        abuse.noop_ok(ftp)
        ftp.quit()
    finally:
        ftp.close()
    # Ending the session closes its unused port too.
    assert abuse.wait_until(lambda: second_inode not in procs.socket_inodes(pid), 2.0), (
        "port %d of an ended session still open" % second)


def test_second_connection_to_data_port_refused(hp):
    # One client alone: ftpssh has closed the port by the time the second
    # connect comes, or the second is in the accept queue and is reset
    # with the listener. Never does it get data.
    for _ in range(3):
        second, port = abuse.op_connect_twice(hp.vs_target, hp.bed.data["1M"])
        assert second in ("refused", "closed", "silent"), second
        # and the port is gone: a third connect is refused
        assert port not in abuse.listening_ports(hp.proxy.pid)
        assert abuse.connect_refused(port), "data port %d still accepts connections" % port


# ftplib's abort() sends "ABOR\r\n" with MSG_OOB: the LF is TCP urgent data,
# lost to a socket without SO_OOBINLINE (ftpssh before 9dfb106 saw
# "ABOR\r" glued to the next command).
@pytest.mark.parametrize("close_first", [True, False], ids=["data-closed-first", "data-open"])
def test_abor_during_retr_ftplib_abort(hp, close_first):
    other = other_session(hp)
    abuse.op_abor_retr(hp.vs_target, BIG, close_first=close_first, oob=True)
    other_session_works(hp, other)


@pytest.mark.parametrize("close_first", [True, False], ids=["data-closed-first", "data-open"])
def test_abor_in_band_during_retr(hp, close_first):
    other = other_session(hp)
    replies = abuse.op_abor_retr(hp.vs_target, BIG, close_first=close_first, oob=False)
    assert replies[0][:3] in ("426", "225", "226"), replies
    other_session_works(hp, other)


def test_long_client_line_gets_500_and_session_works(hp):
    other = other_session(hp)
    r = abuse.op_long_client_line(hp.vs_target, hp.bed.data["1M"])
    assert "too long" in r
    other_session_works(hp, other)
