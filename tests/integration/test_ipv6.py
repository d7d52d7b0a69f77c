"""IPv6 loopback (issue 5): a -L without a bind address, or with
`localhost`, listens on 127.0.0.1 and on ::1, on the same port; only the
127.0.0.1 line is announced. One ftpssh of this module's own:

    -L 127.0.0.1:0:vsftpd   (named address: that address only, as ssh -L)
    -L 0:vsftpd             (no bind address: 127.0.0.1 and ::1)
    -L localhost:0:proftpd  (localhost: 127.0.0.1 and ::1)

Over ::1, per server: ftplib's passive mode (EPSV, as ftplib does on
IPv6) and active mode (EPRT |2|::1|port|), RETR and STOR of 1 MiB with
sha256, LIST; curl -g ftp://[::1]:PORT/ passive (EPSV) and active
(`-P -`: EPRT |2|::1|); lftp over [::1] both ways (its active EPRT names
`::`, the unspecified address, which ftpssh reads as the client's host). The EPSV one-shot port is
bound to ::1 only (the client's address). PASV over ::1 gets ftpssh's 425
pointing to EPSV, and the session goes on. A nobody process racing the
client to a ::1 data port is refused (the uid check reads tcp6 sockets).
"""

import ftplib
import hashlib
import io
import os
import socket

import pytest

from harness import abuse, clients, ftpssh, testbed
from harness.thief import Thief

pytestmark = pytest.mark.ftpssh_only

ANNOUNCE_ANY = "point your FTP client at "
EPRT_V6 = "EPRT |2|::1|"


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Dual:
    def __init__(self, bed):
        vs = bed.ftp_server("vsftpd")
        pro = bed.ftp_server("proftpd")
        # The harness adds "-L 127.0.0.1:0:..." for each server it is given;
        # the other two forwards come as extra options, after it.
        self.proxy = ftpssh.Ftpssh(bed, [vs], wait=False, extra=[
            "-L", "0:%s:%d" % (vs.host, vs.port),
            "-L", "localhost:0:%s:%d" % (pro.host, pro.port)])
        self.proxy.servers = [vs, vs, pro]
        self.proxy.wait_ready()
        self.v4only = self.proxy.targets[0]
        self.both = {"vsftpd": self.proxy.targets[1], "proftpd": self.proxy.targets[2]}

    def v6(self, kind):
        t = self.both[kind]
        return ftpssh.Target("::1", t.port, t.server)


@pytest.fixture(scope="module")
def dual(bed):
    if ftpssh.mode() != "ftpssh":
        pytest.skip("needs ftpssh")
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    d = Dual(bed)
    yield d
    d.proxy.stop(check=True)


@pytest.fixture
def dp(dual):
    dual.proxy.assert_alive()
    yield dual
    dual.proxy.assert_alive()


KINDS = ["vsftpd", "proftpd"]


def banner(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect((host, port))
        data = b""
        while not data.endswith(b"\n"):
            b = s.recv(1024)
            if not b:
                break
            data += b
        s.sendall(b"QUIT\r\n")
        return data.decode("latin-1")


def test_listens_on_both_loopbacks_same_port(dp):
    text = dp.proxy.stderr()
    lines = [l for l in text.splitlines() if ANNOUNCE_ANY in l]
    assert len(lines) == 3, "expected one announcement per -L (3), got:\n" + "\n".join(lines)
    assert all("ftp://127.0.0.1:" in l for l in lines), (
        "only 127.0.0.1 lines should be announced:\n" + "\n".join(lines))
    for kind, t in dp.both.items():
        for host in ("127.0.0.1", "::1"):
            b = banner(host, t.port)
            assert b.startswith("220") and t.server.banner in b, (
                "%s port %d (the -L for %s) greets with %r" % (host, t.port, kind, b))
    # A named bind address is that address only, as with ssh -L.
    with pytest.raises(ConnectionRefusedError):
        banner("::1", dp.v4only.port)


@pytest.mark.parametrize("kind", KINDS)
def test_epsv_over_ipv6(bed, dp, kind, scratch):
    target = dp.v6(kind)
    ftp = clients.open_ftplib(target)
    try:
        assert ftp.af == socket.AF_INET6
        src = bed.data["1M"]
        # The one-shot port is bound where the client is: ::1, not 127.0.0.1.
        ftp.voidcmd("TYPE I")
        host, port = ftplib.parse229(ftp.sendcmd("EPSV"), ftp.sock.getpeername())
        assert host == "::1", host
        # ftpssh's own listeners on that port: [::1] only, no IPv4 one and
        # no [::] (which would take IPv4 too). Not "a connect to
        # 127.0.0.1:port is refused": [::1]:port and 127.0.0.1:port do not
        # conflict, so an unrelated 127.0.0.1 listener (sshd, a server, a
        # gateway) may legitimately sit on the same number.
        mine = sorted(a for a in abuse.listening_sockets(dp.proxy.pid).values() if a[1] == port)
        assert mine == [("::1", port)], (
            "ftpssh's listeners on the EPSV port %d: %s (expected [::1] only)" % (port, mine))
        with socket.create_connection(("::1", port), timeout=30) as conn:
            assert ftp.sendcmd("RETR " + src.name).startswith("150")
            h = hashlib.sha256()
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                h.update(b)
        assert ftp.voidresp().startswith("226")
        assert h.hexdigest() == src.sha256, "EPSV RETR over ::1 from %s: content differs" % kind

        # and ftplib's own way (it sends EPSV on IPv6)
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256
        up = bed.uploads["1M"]
        name = clients.upload_name("v6-epsv-" + kind)
        scratch.append(target.server.file(name))
        with open(up.path, "rb") as f:
            ftp.storbinary("STOR " + name, f, blocksize=1 << 16)
        assert testbed.sha256_file(target.server.file(name)) == up.sha256
        sent = [s.split()[0] for s in ftp.trace_sent]
        assert "PASV" not in sent and sent.count("EPSV") == 3, sent
        assert ftp.last_passive[0] == "::1"
        ftp.quit()
    finally:
        ftp.close()


@pytest.mark.parametrize("kind", KINDS)
def test_eprt_over_ipv6(bed, dp, kind, scratch):
    target = dp.v6(kind)
    ftp = clients.open_ftplib(target, mode="active")
    try:
        src = bed.data["1M"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256, "EPRT RETR over ::1 from %s: content differs" % kind
        up = bed.uploads["1M"]
        name = clients.upload_name("v6-eprt-" + kind)
        scratch.append(target.server.file(name))
        with open(up.path, "rb") as f:
            ftp.storbinary("STOR " + name, f, blocksize=1 << 16)
        assert testbed.sha256_file(target.server.file(name)) == up.sha256
        lines = []
        ftp.retrlines("LIST", lines.append)
        assert any("data-1M" in l for l in lines), lines
        eprts = [s for s in ftp.trace_sent if s.startswith("EPRT")]
        assert len(eprts) == 3 and all(s.startswith(EPRT_V6) for s in eprts), ftp.trace_sent
        oks = [r for r in ftp.trace_received if r.startswith("200 EPRT command successful")]
        assert len(oks) == 3, ftp.transcript()
        ftp.quit()
    finally:
        ftp.close()


@pytest.mark.parametrize("kind", KINDS)
def test_pasv_over_ipv6_refused_then_epsv(bed, dp, kind):
    ftp = clients.open_ftplib(dp.v6(kind))
    try:
        with pytest.raises(ftplib.error_temp) as e:
            ftp.sendcmd("PASV")
        text = str(e.value)
        assert text.startswith("425 ") and "use EPSV" in text, text
        assert ftp.voidcmd("NOOP").startswith("200")
        src = bed.data["1"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update)
        assert h.hexdigest() == src.sha256
        ftp.quit()
    finally:
        ftp.close()


CLIENT_MODES = [
    pytest.param("curl", None, id="curl-epsv"),
    pytest.param("curl", "active", id="curl-eprt"),
    pytest.param("lftp", None, id="lftp-epsv"),
    pytest.param("lftp", "active", id="lftp-eprt"),
]


@pytest.mark.parametrize("client_name,mode", CLIENT_MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_clients_over_ipv6(bed, dp, kind, client_name, mode, scratch):
    target = dp.v6(kind)
    c = clients.client(client_name, bed, target)
    src = bed.data["1M"]
    local = clients.download_path(bed, "v6-%s" % client_name)
    scratch.append(local)
    what = "%s %s over ::1 with %s" % (client_name, "EPRT" if mode else "EPSV", kind)
    r = c.retr(src.name, local, mode=mode)
    assert testbed.sha256_file(local) == src.sha256, what + ": RETR content differs"
    cmds = r.commands()
    if mode:
        assert "EPRT" in cmds and "EPSV" not in cmds and "PASV" not in cmds, "%s: %s" % (what, cmds)
        # curl names ::1; lftp names :: (it never binds a data socket to a
        # loopback interface), which ftpssh takes as the client's own host
        eprt = [s for s in r.sent if s.startswith("EPRT")]
        assert eprt and all(s.startswith((EPRT_V6, "EPRT |2|::|")) for s in eprt), r.sent
    else:
        assert "EPSV" in cmds and "PASV" not in cmds, "%s: %s" % (what, cmds)
    up = bed.uploads["1M"]
    name = clients.upload_name("v6-%s" % client_name)
    scratch.append(target.server.file(name))
    c.stor(up.path, name, mode=mode)
    assert testbed.sha256_file(target.server.file(name)) == up.sha256, what + ": STOR content differs"


def test_thief_refused_over_ipv6(bed, dp):
    """The uid check on a ::1 data port (tcp6 sockets)."""
    src = bed.data["1M"]
    ftp = clients.open_ftplib(dp.v6("vsftpd"))
    try:
        ftp.voidcmd("TYPE I")
        host, port = ftplib.parse229(ftp.sendcmd("EPSV"), ftp.sock.getpeername())
        t = Thief(host, port)
        try:
            r = t.result()
        finally:
            t.kill()
        assert r["connect"] == "ok" and r["bytes"] == 0 and r.get("end") != "timeout", r
        with socket.create_connection((host, port), timeout=30) as conn:
            assert ftp.sendcmd("RETR " + src.name).startswith("150")
            h = hashlib.sha256()
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                h.update(b)
        assert ftp.voidresp().startswith("226")
        assert h.hexdigest() == src.sha256
        ftp.quit()
    finally:
        ftp.close()
    assert "data connection from uid %d refused" % Thief.uid() in dp.proxy.stderr()
