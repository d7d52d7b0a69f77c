"""Data-port theft on a shared workstation (issue 5).

Any local process can connect to the one-shot port ftpssh announces in
its 227/229 before the real client does. By default ftpssh asks the
kernel who owns the connecting socket and takes only a connection from
the uid that owns the control connection.

With the uid check (the shared ftpssh, its default): a process running as
`nobody` (setpriv) connects to the announced EPSV (and PASV) port first,
for a RETR and for a STOR where it also sends forged bytes. It must get
its connection closed without a byte of data, ftpssh must log
"data connection from uid 65534 refused: the session belongs to uid 0",
and the real client's transfer on the same port must then complete with
the right sha256 (the STOR's file holds the client's bytes, not the
thief's). Three thieves at once on one port are all turned away too.

With --no-uid-check (a separate ftpssh): the documented behaviour is that
the first loopback connection wins. The thief's connection is the one
taken and pumped to the server's data port; the one-shot listener is then
gone, so the real client's connect is refused; if the client sends its
RETR anyway, the file goes to the thief, byte for byte. The test shows
exactly that, which is why the check is on by default.
"""

import ftplib
import hashlib
import io
import os
import socket

import pytest

from harness import clients, ftpssh, testbed
from harness.thief import Thief, listening, wait_not_listening

pytestmark = pytest.mark.ftpssh_only

REFUSAL = "data connection from uid %d refused: the session belongs to uid %d"


class RacedFTP(clients.TracingFTP):
    """TracingFTP that runs race(host, port) after the passive reply and
    before its own connection to the data port."""

    race = None

    def makepasv(self):
        host, port = super().makepasv()
        if self.race is not None:
            race, self.race = self.race, None
            race(host, port)
        return host, port


def steal_first(results, send=0):
    """A race callback: the thief connects first and must be turned away
    before the client goes on."""
    def race(host, port):
        t = Thief(host, port, send=send)
        try:
            r = t.result()
        finally:
            t.kill()
        r["port"] = port
        results.append(r)
    return race


def check_turned_away(r, what):
    assert r["uid"] == Thief.uid(), "%s: the thief ran as uid %s, not nobody" % (what, r["uid"])
    assert r["connect"] == "ok", "%s: the thief could not even connect: %s" % (what, r)
    assert r["bytes"] == 0, "%s: the thief received %d bytes of data" % (what, r["bytes"])
    assert r.get("end") != "timeout", (
        "%s: the thief's connection was left open (no close within its time limit): %s" % (what, r))


@pytest.mark.parametrize("mode", ["epsv", "pasv"])
def test_thief_refused_retr_completes(bed, server, proxy, mode):
    uid = os.geteuid()
    line = REFUSAL % (Thief.uid(), uid)
    before = proxy.stderr().count(line)
    results = []
    ftp = clients.open_ftplib(proxy.target, mode=mode, cls=RacedFTP)
    try:
        ftp.race = steal_first(results)
        src = bed.data["1M"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert results, "the race never ran"
        what = "%s RETR from %s, thief first on port %d" % (mode.upper(), server.kind, results[0]["port"])
        check_turned_away(results[0], what)
        assert h.hexdigest() == src.sha256, "%s: the real client's content differs" % what
        assert ftp.last_passive[1] == results[0]["port"], "the client used another port than the thief"
        ftp.quit()
    finally:
        ftp.close()
    after = proxy.stderr().count(line)
    assert after == before + 1, "%s: ftpssh logged %r %d times, expected once; stderr tail:\n%s" % (
        what, line, after - before, proxy.stderr()[-3000:])


def test_thief_refused_stor_keeps_client_bytes(bed, server, proxy, scratch):
    results = []
    ftp = clients.open_ftplib(proxy.target, mode="epsv", cls=RacedFTP)
    name = clients.upload_name("theft-stor")
    scratch.append(server.file(name))
    try:
        ftp.race = steal_first(results, send=16384)
        up = bed.uploads["1M"]
        with open(up.path, "rb") as f:
            ftp.storbinary("STOR " + name, f, blocksize=1 << 16)
        what = "EPSV STOR to %s, thief first sending forged bytes" % server.kind
        check_turned_away(results[0], what)
        ftp.quit()
    finally:
        ftp.close()
    assert testbed.sha256_file(server.file(name)) == up.sha256, (
        "%s: the stored file is not the client's upload (thief's bytes got in?)" % what)
    assert REFUSAL % (Thief.uid(), os.geteuid()) in proxy.stderr()


def test_several_thieves_then_client(bed, server, proxy):
    """Three nobody processes at once on the same EPSV port: all turned
    away, and the port still serves the real client."""
    line = REFUSAL % (Thief.uid(), os.geteuid())
    before = proxy.stderr().count(line)
    results = []

    def race(host, port):
        thieves = [Thief(host, port) for _ in range(3)]
        try:
            for t in thieves:
                r = t.result()
                r["port"] = port
                results.append(r)
        finally:
            for t in thieves:
                t.kill()

    ftp = clients.open_ftplib(proxy.target, mode="epsv", cls=RacedFTP)
    try:
        ftp.race = race
        src = bed.data["1M"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert len(results) == 3
        for i, r in enumerate(results):
            check_turned_away(r, "thief %d of 3 on %s" % (i + 1, server.kind))
        assert h.hexdigest() == src.sha256, "the real client's content differs after 3 thieves"
        ftp.quit()
    finally:
        ftp.close()
    assert proxy.stderr().count(line) == before + 3, proxy.stderr()[-3000:]


@pytest.fixture(scope="module")
def unchecked(bed):
    run = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], extra=["--no-uid-check"])
    yield run
    run.stop(check=True)


def test_no_uid_check_first_connection_wins(bed, unchecked):
    """--no-uid-check: the thief's connection is taken; the real client is
    refused, and a RETR sent anyway delivers the file to the thief."""
    src = bed.data["1M"]
    ftp = clients.open_ftplib(unchecked.target)
    thief = None
    try:
        ftp.voidcmd("TYPE I")
        host, port = ftplib.parse229(ftp.sendcmd("EPSV"), ftp.sock.getpeername())
        assert listening(port), "the announced EPSV port %d is not listening" % port
        thief = Thief(host, port)
        assert thief.wait_connected(), "the thief could not connect: %r" % (thief.result(),)
        assert wait_not_listening(port), (
            "ftpssh still listens on port %d after the thief connected: did it not take the "
            "connection?\n%s" % (port, unchecked.stderr()[-3000:]))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5).close()
        reply = ftp.sendcmd("RETR " + src.name)
        assert reply.startswith("150"), reply
        r = thief.result()
        assert r["uid"] == Thief.uid()
        assert r["bytes"] == src.size and r["sha256"] == src.sha256, (
            "with --no-uid-check the thief's connection should carry the file: %s" % r)
        assert ftp.voidresp().startswith("226")
        ftp.quit()
    finally:
        if thief:
            thief.kill()
        ftp.close()
    text = unchecked.stderr()
    assert "refused: the session belongs to uid" not in text, (
        "--no-uid-check still refused a connection:\n" + text[-3000:])
    unchecked.assert_alive()


def test_no_uid_check_own_transfers_work(bed, unchecked):
    """Without racers, --no-uid-check changes nothing for the client."""
    src = bed.data["1M"]
    ftp = clients.open_ftplib(unchecked.target, mode="epsv")
    try:
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256
        name = clients.upload_name("nouidcheck")
        ftp.storbinary("STOR " + name, io.BytesIO(b"mine\n"))
        path = bed.ftp_server("vsftpd").file(name)
        with open(path, "rb") as f:
            assert f.read() == b"mine\n"
        os.unlink(path)
        ftp.quit()
    finally:
        ftp.close()
