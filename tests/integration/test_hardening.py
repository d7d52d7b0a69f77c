"""Hardening on a shared machine (issue 12: findings 2, 3, 7, 8 and the
limits).

- A `nobody` thief under fd pressure: ftpssh runs with a small
  RLIMIT_NOFILE (prlimit); another uid (a `nobody` hog) opens far more
  control connections than fit. Every one of them gets an answer (the
  greeting or "421 ftpssh: too many sessions"), none is left in silence;
  the thief that then connects to the victim's announced data port gets
  nothing, and the victim's RETR completes with the right sha256; a new
  client meanwhile gets a clear 421, and once the hog leaves a new session
  works again.
- The reserve descriptor: with the soft RLIMIT_NOFILE lowered under a
  running ftpssh so that accept() fails with EMFILE, a new client gets
  "421 ... (out of file descriptors)" instead of libuv's silent close.
- The PORT deputy: another user with its own FTP login sends PORT naming
  the victim's one-shot data port: refused (501, the port belongs to
  another user), and the victim's transfer completes intact. The same from
  the victim's own uid (which passes the listener check) is stopped at the
  data port: ftpssh refuses its own active-mode socket there.
- Limits: --max-sessions-per-user=3: the 4th session of uid 0 gets 421
  while uid 65534 is served; --max-sessions=5: the 6th session in all gets
  421; a freed slot serves again.
- --allow-users/--allow-groups: only those users (or group members) get a
  session; others get 421.
- --idle-timeout: a session with no command gets 421 and is closed; one
  whose transfer outlasts the timeout is not cut.
- Reply order (finding 7): PORT naming a closed port, STAT and RETR sent in
  one write. RFC 959 answers commands in order, so the client must read
  200 (PORT: ftpssh's own; a port nobody listens on yet is no reason to
  refuse a PORT, the check that matters comes with RETR), then 211 (STAT: the
  server's), then 425 (RETR: ftpssh's own, nothing listens on the port);
  ftpssh's 425 must not overtake the server's 211.
- Masking (finding 8): `PASS<TAB>secret`, ` PASS secret` and `ACCT secret`
  appear masked at -vv and in --status-file.
"""

import ftplib
import hashlib
import json
import os
import re
import select
import socket
import subprocess
import time

import pytest

from harness import clients, ftpssh, procs, stubftp, testbed
from harness.thief import THIEF_GROUP, THIEF_USER, Hog, Thief

pytestmark = pytest.mark.ftpssh_only

NOFILE = 96
HOGS = 120


def first_line(target, timeout=10.0):
    """Connect to ftpssh and return the first line it says ('' at EOF)."""
    s = socket.create_connection((target.host, target.port), timeout=timeout * procs.time_scale())
    try:
        buf = b""
        while b"\n" not in buf:
            b = s.recv(4096)
            if not b:
                break
            buf += b
        return buf.split(b"\n", 1)[0].decode("latin-1").rstrip("\r")
    finally:
        s.close()


def wait_for(pred, what, timeout=10.0):
    deadline = time.monotonic() + timeout * procs.time_scale()
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def read_all(sock):
    h = hashlib.sha256()
    n = 0
    while True:
        b = sock.recv(1 << 16)
        if not b:
            return n, h.hexdigest()
        n += len(b)
        h.update(b)


# --- fd pressure ---------------------------------------------------------------

@pytest.mark.timeout(180)
def test_thief_under_fd_pressure(bed):
    srv = bed.ftp_server("vsftpd")
    run = ftpssh.Ftpssh(bed, [srv], prefix=["prlimit", "--nofile=%d" % NOFILE, "--"])
    hog = None
    try:
        src = bed.data["1M"]
        victim = clients.open_ftplib(run.target)
        victim.voidcmd("TYPE I")
        host, port = ftplib.parse229(victim.sendcmd("EPSV"), victim.sock.getpeername())

        hog = Hog(run.target.host, run.target.port, HOGS, wait=20.0)
        lines = hog.result()["lines"]

        t = Thief(host, port)
        try:
            r = t.result()
        finally:
            t.kill()
        assert r["bytes"] == 0, "the thief received %d bytes under fd pressure" % r["bytes"]
        assert r.get("end") != "timeout", "the thief's connection was left open: %s" % r

        # the victim's transfer, on its own port, completes
        data = socket.create_connection((host, port), timeout=clients.timeout())
        assert victim.sendcmd("RETR " + src.name).startswith("150")
        n, sha = read_all(data)
        data.close()
        assert (n, sha) == (src.size, src.sha256), "the victim's RETR: %d bytes, wrong content" % n
        assert victim.voidresp().startswith("226")

        # every connection of the hog got an answer: served or refused
        greeted = [l for l in lines if l.startswith("220")]
        refused = [l for l in lines if l.startswith("421")]
        other = [l for l in lines if not l.startswith(("220", "421"))]
        assert not other, ("%d of %d connections of the hog got no answer (silence, EOF or "
                           "error): %s\nftpssh:\n%s" % (len(other), len(lines), other[:5],
                                                        run.stderr()[-3000:]))
        assert refused and greeted, "the hog was neither served nor refused: %s" % lines[:5]
        assert all("too many sessions" in l for l in refused), refused[:3]

        # a new client while the hog holds its sessions: a clear 421
        line = first_line(run.target)
        assert line.startswith("421 ftpssh: too many sessions"), (
            "a new client got %r instead of a 421\n%s" % (line, run.stderr()[-2000:]))
        victim.quit()
        victim.close()

        hog.stop()
        hog = None
        # the hog has gone: a new session is served again
        def served():
            return first_line(run.target).startswith("220")
        wait_for(served, "a greeting after the hog left")
        run.assert_alive()
    finally:
        if hog:
            hog.stop()
        run.stop(check=True)
    text = run.stderr()
    assert "refused: the session belongs to uid 0" in text or "cannot tell who" in text, (
        "no refusal of the thief was logged:\n" + text[-3000:])


def lowest_free_fd(pid):
    used = {int(fd) for fd in os.listdir("/proc/%d/fd" % pid)}
    return min(set(range(len(used) + 1)) - used)


@pytest.mark.timeout(120)
def test_emfile_gets_421_from_the_reserve(bed):
    """Descriptors run out for real (the soft RLIMIT_NOFILE lowered under
    the running ftpssh to its lowest free descriptor): a new client gets
    "421 ... out of file descriptors" through the reserve descriptor
    instead of libuv's silent close, and once descriptors are back a new
    session is served."""
    run = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")])
    try:
        ftp = clients.open_ftplib(run.target)
        soft, hard = [int(x) for x in subprocess.check_output(
            ["prlimit", "--pid", str(run.pid), "--nofile", "--raw", "--noheadings",
             "--output", "SOFT,HARD"]).split()]
        limit = lowest_free_fd(run.pid)
        subprocess.check_call(["prlimit", "--pid", str(run.pid), "--nofile=%d:%d" % (limit, hard)])
        try:
            line = first_line(run.target)
        finally:
            subprocess.check_call(["prlimit", "--pid", str(run.pid),
                                   "--nofile=%d:%d" % (soft, hard)])
        assert line.startswith("421 ftpssh: too many sessions (out of file descriptors)"), (
            "with no descriptor left a new client got %r\n%s" % (line, run.stderr()[-2000:]))
        assert ftp.voidcmd("NOOP").startswith("200"), "the session already open was hurt"
        assert first_line(run.target).startswith("220"), "no greeting once descriptors were back"
        ftp.quit()
        ftp.close()
    finally:
        run.stop(check=True)
    assert "out of file descriptors; a new client got 421" in run.stderr()


# --- the PORT deputy -------------------------------------------------------------

_ATTACK = r"""
import json, socket, sys
host, port, user, pw, vport, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
s = socket.create_connection((host, port), timeout=20)
f = s.makefile("rb")
def reply():
    while True:
        l = f.readline().decode("latin-1").rstrip("\r\n")
        if not l or (len(l) >= 4 and l[:3].isdigit() and l[3] == " "):
            return l
def cmd(c):
    s.sendall((c + "\r\n").encode())
    return reply()
def say(k, v):
    print(json.dumps({k: v}), flush=True)
say("greeting", reply())
cmd("USER " + user)
say("pass", cmd("PASS " + pw))
cmd("TYPE I")
say("port", cmd("PORT 127,0,0,1,%d,%d" % (vport >> 8, vport & 255)))
say("stor", cmd("STOR " + name))
say("end", reply())
"""


@pytest.mark.parametrize("server", ["vsftpd"], indirect=True)
def test_port_deputy_other_user(bed, server, proxy, scratch):
    src = bed.data["1M"]
    name = clients.upload_name("deputy")
    scratch.append(server.file(name))
    victim = clients.open_ftplib(proxy.target)
    attacker = None
    try:
        victim.voidcmd("TYPE I")
        host, port = ftplib.parse229(victim.sendcmd("EPSV"), victim.sock.getpeername())
        attacker = subprocess.Popen(
            ["setpriv", "--reuid=%s" % THIEF_USER, "--regid=%s" % THIEF_GROUP, "--clear-groups",
             "/usr/bin/python3", "-c", _ATTACK, proxy.target.host, str(proxy.target.port),
             testbed.FTP_USER, testbed.FTP_PASSWORD, str(port), name],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
            env={"PATH": "/usr/bin:/bin"})
        said = {}
        deadline = time.monotonic() + 20 * procs.time_scale()
        while "port" not in said and time.monotonic() < deadline:
            r, _, _ = select.select([attacker.stdout], [], [], 1.0)
            if r:
                line = attacker.stdout.readline()
                if not line:
                    break
                said.update(json.loads(line))
        assert said.get("pass", "").startswith("230"), "the attacker could not log in: %s" % said
        assert said.get("port", "").startswith("501"), (
            "PORT naming the victim's data port was answered %r, not refused" % said.get("port"))
        assert "another user" in said["port"], said["port"]
        time.sleep(0.5)  # what an accepted PORT+STOR would do, it would have done by now
        data = socket.create_connection((host, port), timeout=clients.timeout())
        assert victim.sendcmd("RETR " + src.name).startswith("150")
        n, sha = read_all(data)
        data.close()
        assert (n, sha) == (src.size, src.sha256), "the victim's RETR was not intact (%d bytes)" % n
        assert victim.voidresp().startswith("226")
        victim.quit()
    finally:
        victim.close()
        if attacker:
            attacker.kill()
            attacker.communicate()
    if os.path.exists(server.file(name)):
        assert testbed.sha256_file(server.file(name)) != src.sha256, "the attacker got the file"
    assert "refused: that port belongs to another user (uid %d asked)" % Thief.uid() in proxy.stderr()


@pytest.mark.parametrize("server", ["vsftpd"], indirect=True)
def test_port_deputy_own_socket_refused_at_data_port(bed, server, proxy, scratch):
    """Same uid (the listener check passes): the data port knows ftpssh's
    own active-mode socket and refuses it; the victim's port stays open."""
    src = bed.data["1M"]
    name = clients.upload_name("deputy-self")
    scratch.append(server.file(name))
    victim = clients.open_ftplib(proxy.target)
    other = clients.open_ftplib(proxy.target)
    try:
        victim.voidcmd("TYPE I")
        host, port = ftplib.parse229(victim.sendcmd("EPSV"), victim.sock.getpeername())
        other.voidcmd("TYPE I")
        assert other.sendcmd("PORT 127,0,0,1,%d,%d" % (port >> 8, port & 255)).startswith("200")
        try:
            other.sendcmd("STOR " + name)
            other.voidresp()
        except ftplib.Error:
            pass  # 425/426: fine, as long as the victim's data stays its own
        data = socket.create_connection((host, port), timeout=clients.timeout())
        assert victim.sendcmd("RETR " + src.name).startswith("150")
        n, sha = read_all(data)
        data.close()
        assert (n, sha) == (src.size, src.sha256), "the victim's RETR was not intact (%d bytes)" % n
        assert victim.voidresp().startswith("226")
        victim.quit()
        other.quit()
    finally:
        victim.close()
        other.close()
    if os.path.exists(server.file(name)):
        assert os.path.getsize(server.file(name)) == 0, "the deputy stored the victim's bytes"
    assert "data connection from ftpssh's own active-mode socket refused" in proxy.stderr()


# --- limits --------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_session_caps(bed):
    srv = bed.ftp_server("vsftpd")
    run = ftpssh.Ftpssh(bed, [srv], extra=["--max-sessions=5", "--max-sessions-per-user=3"])
    mine = []
    try:
        for _ in range(3):
            mine.append(clients.open_ftplib(run.target))
        line = first_line(run.target)
        assert line.startswith("421 ftpssh: too many sessions for uid %d" % os.geteuid()), line
        hog = Hog(run.target.host, run.target.port, 3)
        try:
            lines = hog.result()["lines"]
        finally:
            hog.stop()
        assert [l[:3] for l in lines] == ["220", "220", "421"], lines
        assert "too many sessions (5 in all" in lines[2], lines[2]
        # a freed slot serves again
        mine.pop().quit()
        wait_for(lambda: first_line(run.target).startswith("220"), "a free slot")
        for f in mine:
            assert f.voidcmd("NOOP").startswith("200")
    finally:
        for f in mine:
            f.close()
        run.stop(check=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("option,served", [("--allow-users=%s" % THIEF_USER, "nobody"),
                                           ("--allow-groups=root", "root")])
def test_allowed_users_and_groups(bed, option, served):
    """A relay lends its SSH identity to every local user: with
    --allow-users/--allow-groups only those may use it."""
    run = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], extra=[option])
    try:
        hog = Hog(run.target.host, run.target.port, 1)
        try:
            nobody = hog.result()["lines"][0]
        finally:
            hog.stop()
        root = first_line(run.target)
    finally:
        run.stop(check=True)
    ok, refused = (nobody, root) if served == "nobody" else (root, nobody)
    refused_uid = os.geteuid() if served == "nobody" else Thief.uid()
    assert ok.startswith("220"), "%s: the allowed user got %r" % (option, ok)
    assert refused.startswith("421 ftpssh: uid %d may not use this relay" % refused_uid), (
        "%s: the other user got %r" % (option, refused))


@pytest.mark.timeout(120)
def test_idle_timeout(bed):
    srv = bed.ftp_server("vsftpd")
    run = ftpssh.Ftpssh(bed, [srv], extra=["--idle-timeout=2"])
    try:
        t0 = time.monotonic()
        ftp = clients.open_ftplib(run.target)
        text = clients.unsolicited_line(ftp, 15)
        assert text.startswith("421 ftpssh: idle for 2 s"), text
        assert 1.9 < time.monotonic() - t0 < 12 * procs.time_scale()

        # a transfer that outlasts the timeout is not cut, and the
        # session goes on afterwards
        src = bed.data["1M"]
        ftp = clients.open_ftplib(run.target)
        try:
            h = hashlib.sha256()

            def slow(b):
                h.update(b)
                time.sleep(0.05)
            t0 = time.monotonic()
            ftp.retrbinary("RETR " + src.name, slow, blocksize=1 << 14)
            assert time.monotonic() - t0 > 2.5, "the transfer was too quick to prove anything"
            assert h.hexdigest() == src.sha256
            assert ftp.voidcmd("NOOP").startswith("200")
        finally:
            ftp.close()
    finally:
        run.stop(check=True)
    assert "idle for 2 s; closing the session" in run.stderr()


# --- reply order -------------------------------------------------------------

@pytest.mark.parametrize("server", ["vsftpd"], indirect=True)
def test_local_425_keeps_reply_order(bed, server, proxy):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    ftp = clients.open_ftplib(proxy.target)
    try:
        lines = ["PORT 127,0,0,1,%d,%d" % (port >> 8, port & 255), "STAT",
                 "RETR " + bed.data["1"].name]
        ftp.sock.sendall("".join(l + "\r\n" for l in lines).encode())
        replies = [ftp.getmultiline() for _ in lines]
        codes = [r[:3] for r in replies]
        assert codes == ["200", "211", "425"], (
            "replies out of order:\n%s" % "\n".join("%s -> %s" % lr for lr in zip(lines, replies)))
        assert "cannot open the data connection to your port" in replies[2], replies[2]
        assert ftp.voidcmd("NOOP").startswith("200")
        ftp.quit()
    finally:
        ftp.close()


# --- masking ---------------------------------------------------------------------

SECRETS = ("PASS\tsecret-tab-1", " PASS secret-space-2", "ACCT secret-acct-3",
           "\xff\xf4\xff\xf2pass secret-iac-4")


@pytest.fixture(scope="module")
def verbose_proxy(bed):
    """-vv and --status-file, in front of the stub server (which answers
    anything, where vsftpd would hang up after three bad logins)."""
    status = os.path.join(bed.logdir, "hardening-status.txt")
    stub = stubftp.StubFtp(pasv_host="127.0.0.1")
    try:
        run = ftpssh.Ftpssh(bed, [stub], extra=["-vv", "--status-file", status])
        run.status_file = status
        yield run
        run.stop(check=True)
    finally:
        stub.close()


def test_secrets_masked(bed, verbose_proxy):
    run = verbose_proxy
    s = socket.create_connection((run.target.host, run.target.port), timeout=clients.timeout())
    f = s.makefile("rb")

    def reply():
        while True:
            l = f.readline().decode("latin-1")
            if not l or (l[:3].isdigit() and l[3:4] == " "):
                return l

    try:
        assert reply().startswith("220")
        for line in ("USER " + testbed.FTP_USER,) + SECRETS:
            s.sendall((line + "\r\n").encode("latin-1"))
            assert reply(), "no reply to %r" % line

        def status_shows_acct():
            try:
                with open(run.status_file) as st:
                    text = st.read()
            except OSError:
                return None
            return text if "PASS ****" in text or "ACCT ****" in text else None
        # the last command is the IAC PASS line; wait for a table that shows it
        status = wait_for(status_shows_acct, "the status file to show the masked command")
    finally:
        s.close()
    log = run.stderr()
    for secret in ("secret-tab-1", "secret-space-2", "secret-acct-3", "secret-iac-4"):
        assert secret not in log, "%s logged in clear at -vv:\n%s" % (
            secret, "\n".join(l for l in log.splitlines() if secret in l))
        assert secret not in status, "%s in the status file:\n%s" % (secret, status)
    assert log.count("-> PASS ****") >= 3 and "-> ACCT ****" in log, log[-3000:]


def test_session_end_lines(bed, verbose_proxy):
    """A QUIT answered, and a client that sends QUIT and resets the
    connection at once (as rclone does), are normal closes."""
    run = verbose_proxy
    ftp = clients.open_ftplib(run.target)
    ftp.quit()
    ftp.close()
    s = socket.create_connection((run.target.host, run.target.port), timeout=clients.timeout())
    s.recv(4096)
    s.sendall(b"QUIT\r\n")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    wait_for(lambda: len(re.findall(r"closed normally after [\d.]+ s: (?:QUIT answered|client "
                                    r"connection closed)", run.stderr())) >= 2,
             "two normal-close lines\n" + run.stderr()[-2000:])
    assert " failed after " not in run.stderr(), run.stderr()[-3000:]
