"""Active mode against a server that reads nothing after PASV until its
data port is connected (issue 15), and honest per-session log lines.

The server is harness/stubftp.py in strict mode, shaped like the one the
issue found: EPSV answers 502, and after its 227 it waits for the data
connection before it reads another command; after 10 s it answers
"550 Requested action not taken: internal server error" and closes.

ftpssh asks the server for its passive port only when the client's
transfer command arrives, opens the channel to it at once and sends the
transfer command right behind the PASV. So curl, which sends TYPE I (and
SIZE) between EPRT and RETR, works as well as lftp, ftplib and wget: each
RETR arrives whole (sha256), the stub never times out, and every PASV it
sees is followed directly by the transfer command (before the change the
server saw PASV, then TYPE I, and stalled).

Log lines: a RETR the server refuses (550, no such file) writes no
transfer line even though the client had connected its data port; a real
RETR writes one.
"""

import hashlib
import os
import re

import pytest

from harness import clients, ftpssh, stubftp, testbed

pytestmark = pytest.mark.ftpssh_only

BLOB = os.urandom((1 << 20) + 7)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
TRANSFERS = ("RETR", "STOR", "LIST", "NLST")


@pytest.fixture(scope="module")
def strict(bed):
    stub = stubftp.StubFtp(pasv_host="127.0.0.1", strict=True, epsv=False)
    stub.files["blob"] = BLOB
    try:
        run = ftpssh.Ftpssh(bed, [stub])
        yield stub, run
        run.stop(check=True)
    finally:
        stub.close()


def check_pasv_then_transfer(stub, first, what):
    cmds = stub.commands()[first:]
    assert "PASV" in cmds, "%s: the server saw no PASV: %s" % (what, cmds)
    for i, c in enumerate(cmds):
        if c == "PASV":
            nxt = cmds[i + 1] if i + 1 < len(cmds) else None
            assert nxt in TRANSFERS, (
                "%s: after PASV the server got %s, not the transfer command: %s" % (what, nxt, cmds))


@pytest.mark.parametrize("client_name", ["curl", "lftp", "wget", "ftplib"])
def test_active_retr_against_strict_server(bed, strict, client_name, scratch):
    stub, run = strict
    first = len(stub.commands())
    timeouts = stub.strict_timeouts
    local = clients.download_path(bed, "strict-%s" % client_name)
    scratch.append(local)
    what = "%s active RETR from a strict server" % client_name
    r = clients.client(client_name, bed, run.target).retr("blob", local, mode="active")
    assert testbed.sha256_file(local) == BLOB_SHA, what + ": content differs"
    assert stub.strict_timeouts == timeouts, "%s: the server timed out waiting" % what
    check_pasv_then_transfer(stub, first, what)
    assert not any(c in r.commands() for c in ("PASV", "EPSV")), r.commands()


def test_curl_sends_type_between_eprt_and_retr(bed, strict, scratch):
    """The case of the issue, made explicit: curl's own dialogue has
    commands between EPRT and RETR, and the STOR direction works too."""
    stub, run = strict
    c = clients.client("curl", bed, run.target)
    local = clients.download_path(bed, "strict-curl-type")
    scratch.append(local)
    r = c.retr("blob", local, mode="active")
    cmds = r.commands()
    assert "EPRT" in cmds and "RETR" in cmds
    between = cmds[cmds.index("EPRT") + 1:cmds.index("RETR")]
    assert between, "curl sent nothing between EPRT and RETR this time: %s" % cmds
    up = bed.uploads["1M"]
    first = len(stub.commands())
    c.stor(up.path, "up-strict", mode="active")
    assert hashlib.sha256(stub.stored["up-strict"]).hexdigest() == up.sha256
    check_pasv_then_transfer(stub, first, "curl active STOR")


def test_no_transfer_line_for_refused_command(bed, strict):
    stub, run = strict
    ftp = clients.open_ftplib(run.target, mode="pasv")
    try:
        import ftplib
        with pytest.raises(ftplib.error_perm):
            ftp.retrbinary("RETR no-such-file", lambda b: None)
        ftp.set_pasv(False)
        with pytest.raises(ftplib.error_perm):
            ftp.retrbinary("RETR no-such-file-2", lambda b: None)
        ftp.set_pasv(True)
        h = hashlib.sha256()
        ftp.retrbinary("RETR blob", h.update)
        assert h.hexdigest() == BLOB_SHA
        ftp.quit()
    finally:
        ftp.close()
    text = run.stderr()
    line = re.compile(r"\] RETR %s: [\d.]+ \S+ (?:from|to) server")
    assert not re.search(line.pattern % "no-such-file", text), (
        "a transfer line for a refused RETR:\n" + text[-2000:])
    assert not re.search(line.pattern % "no-such-file-2", text), text[-2000:]
    assert re.search(line.pattern % "blob", text), "no transfer line for a real RETR:\n" + text[-2000:]
    assert " failed after " not in text, text[-2000:]
