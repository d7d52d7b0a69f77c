"""Active mode (issue 5): the client sends PORT or EPRT and listens;
ftpssh answers it itself ("200 ... (ftpssh carries it over SSH)"), keeps
the server side passive (EPSV, else PASV, sent upstream by ftpssh), and
when the transfer command comes connects to the client's port and pumps
it to the server's data port over a direct-tcpip channel.

Against vsftpd and proftpd, for curl (`--ftp-port -`: EPRT, and PORT with
--disable-eprt), lftp (`ftp:passive-mode off`: PORT) and ftplib
(`set_pasv(False)`: PORT, and EPRT |1| by hand): RETR and STOR of 1 MiB,
sha256 on both sides, and LIST; per server (pyftpdlib too), wget
(`--no-passive-ftp`) retrieves and ftplib is active after the refusals.
Under ftpssh the client must have got ftpssh's own 200, and sshd must
have opened a direct-tcpip channel to a port other than the control port
for each transfer: the bytes went through SSH, not server -> client.

Refusals (ftpssh only): PORT/EPRT naming a non-loopback address (FTP
bounce) and ports below 1024 get 501, nothing else happens, and the
session goes on: NOOP, an active and a passive transfer on the same
control connection. The unspecified address (PORT 0,0,0,0,…, EPRT
|1|0.0.0.0|…|; lftp sends EPRT |2|::|…| over IPv6) means the client's own
host, the peer of the control connection. A PORT followed by PASV/EPSV
leaves the client's listener alone (the later passive request wins).
Pipelined commands get ftpssh's own answers (200/501 to PORT/EPRT, 534 to
AUTH) in their place among the server's replies. A PORT to a port
nobody listens on gets ftpssh's 425 at once, and the session goes on.
"""

import ftplib
import hashlib
import io
import os
import socket

import pytest

from harness import clients, ftpssh, testbed

PORT_OK = "ftpssh carries it over SSH"
BOUNCE_501 = "must name a loopback address (no FTP bounce)"
LOW_501 = "to a port below 1024 refused"

FLAVOURS = [(c, m) for c in ("curl", "lftp", "ftplib") for m in clients.ACTIVE_FLAVOURS[c]]


def check_active(result, flavour, what, bed=None, server=None, before=None):
    """The client used FLAVOUR (PORT or EPRT) and no passive command; under
    ftpssh it got ftpssh's 200 and the data rode an SSH channel."""
    cmds = result.commands()
    want = flavour.upper()
    assert want in cmds, "%s: expected %s, the client sent %s" % (what, want, cmds)
    assert "PASV" not in cmds and "EPSV" not in cmds, (
        "%s: an active client sent a passive command: %s" % (what, cmds))
    if ftpssh.mode() != "ftpssh":
        return
    ok = [r for r in result.received if r.startswith("200 ") and PORT_OK in r]
    assert ok, "%s: no ftpssh 200 for %s among the replies:\n%s" % (
        what, want, "\n".join(result.received[-20:]))
    assert ok[-1].startswith("200 %s command successful" % want), ok
    if bed is not None:
        opened = bed.sshd().direct_tcpip_targets()[before:]
        data = [p for p in opened if p != server.port]
        assert data, ("%s: sshd opened no direct-tcpip channel to a data port (saw %s): "
                      "the data did not go through SSH" % (what, opened))


def channels_before(bed):
    return len(bed.sshd().direct_tcpip_targets()) if ftpssh.mode() == "ftpssh" else 0


@pytest.mark.parametrize("client_name,flavour", FLAVOURS, ids=["%s-%s" % f for f in FLAVOURS])
@pytest.mark.parametrize("server", ["vsftpd", "proftpd"], indirect=True)
def test_active_retr_stor_list(bed, server, proxy, client_name, flavour, scratch):
    c = clients.client(client_name, bed, proxy.target)
    mode = "active" if flavour == clients.ACTIVE_FLAVOURS[client_name][0] else flavour

    src = bed.data["1M"]
    local = clients.download_path(bed, "active-%s-%s" % (client_name, flavour))
    scratch.append(local)
    what = "%s active (%s) RETR from %s" % (client_name, flavour.upper(), server.kind)
    before = channels_before(bed)
    r = c.retr(src.name, local, mode=mode)
    check_active(r, flavour, what, bed, server, before)
    assert testbed.sha256_file(local) == src.sha256, what + ": content differs"

    up = bed.uploads["1M"]
    name = clients.upload_name("active-%s-%s" % (client_name, flavour))
    scratch.append(server.file(name))
    what = "%s active (%s) STOR to %s" % (client_name, flavour.upper(), server.kind)
    before = channels_before(bed)
    r = c.stor(up.path, name, mode=mode)
    check_active(r, flavour, what, bed, server, before)
    assert os.path.exists(server.file(name)), what + ": no file on the server"
    assert testbed.sha256_file(server.file(name)) == up.sha256, what + ": content differs"

    what = "%s active (%s) LIST on %s" % (client_name, flavour.upper(), server.kind)
    before = channels_before(bed)
    r = c.listing(mode=mode)
    check_active(r, flavour, what, bed, server, before)
    assert "data-1M" in r.output, "%s: data-1M not listed:\n%s" % (what, r.output[-2000:])


def test_active_wget_retr(bed, server, proxy, scratch):
    c = clients.client("wget", bed, proxy.target)
    src = bed.data["1M"]
    local = clients.download_path(bed, "active-wget")
    scratch.append(local)
    what = "wget --no-passive-ftp RETR from %s" % server.kind
    before = channels_before(bed)
    r = c.retr(src.name, local, mode="active")
    check_active(r, "port", what, bed, server, before)
    assert testbed.sha256_file(local) == src.sha256, what + ": content differs"


# --- refusals ---------------------------------------------------------------

def expect_501(ftp, line, words):
    with pytest.raises(ftplib.error_perm) as e:
        ftp.sendcmd(line)
    text = str(e.value)
    assert text.startswith("501 "), "%r: expected 501, got %r\n%s" % (line, text, ftp.transcript())
    assert words in text, "%r: 501 without %r: %r" % (line, words, text)


# line, words the 501 must contain
REFUSED = [
    ("PORT 10,0,0,1,4,1", "PORT " + BOUNCE_501),
    ("PORT 192,0,2,1,200,10", "PORT " + BOUNCE_501),
    ("EPRT |1|198.51.100.7|2000|", "EPRT " + BOUNCE_501),
    ("EPRT |2|2001:db8::1|2000|", "EPRT " + BOUNCE_501),
    ("EPRT |2|::ffff:10.0.0.1|2000|", "EPRT " + BOUNCE_501),
    ("PORT 127,0,0,1,0,21", "PORT " + LOW_501),
    ("PORT 127,0,0,1,3,255", "PORT " + LOW_501),
    ("EPRT |1|127.0.0.1|80|", "EPRT " + LOW_501),
    ("EPRT |2|::1|22|", "EPRT " + LOW_501),
    ("PORT 0,0,0,0,0,80", "PORT " + LOW_501),
    ("PORT 127,0,0,1,300,1", "cannot parse the PORT argument"),
    ("PORT 127,0,0,1", "cannot parse the PORT argument"),
    ("EPRT |3|127.0.0.1|2000|", "cannot parse the EPRT argument"),
]


@pytest.mark.ftpssh_only
def test_port_refusals_session_continues(bed, server, proxy):
    ftp = clients.open_ftplib(proxy.target)
    try:
        for line, words in REFUSED:
            expect_501(ftp, line, words)
            assert ftp.voidcmd("NOOP").startswith("200"), "NOOP after %r" % line
        # the session goes on: an active transfer, then a passive one
        src = bed.data["1M"]
        ftp.set_pasv(False)
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256, "active RETR after the refusals: content differs"
        ftp.set_pasv(True)
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256, "passive RETR after the refusals: content differs"
        ftp.quit()
    finally:
        ftp.close()
    text = proxy.stderr()
    assert "PORT to 10.0.0.1:1025 refused: not a loopback address" in text, (
        "no log line for the refused bounce:\n" + text[-3000:])


@pytest.mark.ftpssh_only
def test_port_then_passive_leaves_client_alone(bed, server, proxy):
    """PORT (accepted), then EPSV before the RETR: the transfer is passive,
    and nothing connects to the port the PORT named."""
    lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lis.bind(("127.0.0.1", 0))
    lis.listen(1)
    lis.settimeout(1.0)
    host, port = lis.getsockname()
    ftp = clients.open_ftplib(proxy.target, mode="epsv")
    try:
        reply = ftp.sendcmd("PORT 127,0,0,1,%d,%d" % (port >> 8, port & 255))
        assert reply.startswith("200 PORT command successful") and PORT_OK in reply, reply
        src = bed.data["1M"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256, "EPSV RETR after PORT: content differs"
        assert "EPSV" in [s.split()[0] for s in ftp.trace_sent]
        with pytest.raises(socket.timeout):
            conn, peer = lis.accept()
            conn.close()
            raise AssertionError("something connected to the PORT's listener from %s" % (peer,))
        # and a STOR the same way
        name = clients.upload_name("port-then-epsv")
        ftp.storbinary("STOR " + name, io.BytesIO(b"after PORT, EPSV\n"))
        with open(server.file(name), "rb") as f:
            assert f.read() == b"after PORT, EPSV\n"
        os.unlink(server.file(name))
        ftp.quit()
    finally:
        ftp.close()
        lis.close()


@pytest.mark.ftpssh_only
def test_local_answers_keep_order_when_pipelined(bed, server, proxy):
    """Commands sent in one write: ftpssh's own answers (PORT/EPRT 200 or
    501, AUTH 534) come in their place among the server's replies."""
    lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lis.bind(("127.0.0.1", 0))
    lis.listen(1)
    port = lis.getsockname()[1]
    ftp = clients.open_ftplib(proxy.target)
    try:
        lines = ["NOOP", "PORT 10,0,0,1,4,1", "NOOP", "AUTH TLS", "TYPE I",
                 "PORT 127,0,0,1,%d,%d" % (port >> 8, port & 255), "NOOP",
                 "EPRT |1|127.0.0.1|80|", "NOOP"]
        ftp.sock.sendall("".join(l + "\r\n" for l in lines).encode())
        replies = [ftp.getmultiline() for _ in lines]
        codes = [r[:3] for r in replies]
        assert codes == ["200", "501", "200", "534", "200", "200", "200", "501", "200"], (
            "replies out of order:\n%s" % "\n".join("%s -> %s" % lr for lr in zip(lines, replies)))
        assert BOUNCE_501 in replies[1] and LOW_501 in replies[7] and PORT_OK in replies[5], replies
        assert ftp.voidcmd("NOOP").startswith("200")
        ftp.quit()
    finally:
        ftp.close()
        lis.close()


class UnspecifiedFTP(clients.TracingFTP):
    """Listens on 127.0.0.1 as usual but names 0.0.0.0 in PORT/EPRT."""

    def sendport(self, host, port):
        return super().sendport("0.0.0.0", port)


@pytest.mark.ftpssh_only
@pytest.mark.parametrize("mode", ["port", "eprt"])
def test_unspecified_address_means_client_host(bed, server, proxy, mode):
    ftp = clients.open_ftplib(proxy.target, mode=mode, cls=UnspecifiedFTP)
    try:
        src = bed.data["1M"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256, "RETR after %s naming 0.0.0.0: content differs" % mode
        named = [s for s in ftp.trace_sent if s.startswith(("PORT", "EPRT"))]
        assert named and ("0,0,0,0," in named[0] or "|0.0.0.0|" in named[0]), named
        assert any(r.startswith("200 %s command successful" % mode.upper()) for r in ftp.trace_received)
        ftp.quit()
    finally:
        ftp.close()



@pytest.mark.ftpssh_only
def test_active_client_port_closed_fails_fast(bed, server, proxy):
    """PORT naming a loopback port nobody listens on, then RETR: ftpssh
    holds the RETR until its connection to the client's port is made, so
    a refused port gets its 425 at once (5 s allowed here; a server's own
    data timeout is 30-60 s), and the session goes on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    ftp = clients.open_ftplib(proxy.target)
    try:
        ftp.voidcmd("TYPE I")
        assert ftp.sendcmd("PORT 127,0,0,1,%d,%d" % (port >> 8, port & 255)).startswith("200")
        ftp.sock.settimeout(5 * clients.procs.time_scale())
        with pytest.raises(ftplib.error_temp) as e:
            ftp.sendcmd("RETR " + bed.data["1"].name)
        text = str(e.value)
        assert text.startswith("425 ftpssh: cannot open the data connection to your port"), text
        ftp.sock.settimeout(clients.timeout())
        assert ftp.voidcmd("NOOP").startswith("200")
        # the next active transfer on the same session works
        ftp.set_pasv(False)
        src = bed.data["1M"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256
        ftp.quit()
    finally:
        ftp.close()
