"""--data-host (issue 5): where ftpssh sends a data channel.

The server is a stub (harness/stubftp.py) whose control port is on
127.0.0.1, the -L host, but whose PASV data listener is on 127.0.0.2 and
whose 227 says 127,0,0,2 -- a server that hands data to another host,
kept on loopback. Its EPSV listener is on 127.0.0.1 (RFC 2428: no
address, the control host).

--data-host=reported: sshd opens the direct-tcpip channel to 127.0.0.2 and
the port of the 227, and PASV transfers work with ftplib, curl
(--disable-epsv) and lftp (which connects to the address of the 227 it
gets: ftpssh's 127.0.0.1). EPSV still goes to the control host. An active
client (PORT) against a server without EPSV makes ftpssh fall back to
PASV upstream, and that data channel too goes to 127.0.0.2.

Default (and --data-host=control): the channel goes to the control host,
127.0.0.1, where the stub has nothing on that port, so the transfer
fails (ftpssh closes the data connection, the stub answers 425 after its
short accept timeout) and the session goes on.
"""

import ftplib
import hashlib
import io
import os
import re

import pytest

from harness import clients, ftpssh, stubftp

pytestmark = pytest.mark.ftpssh_only

TARGET = re.compile(r"server_request_direct_tcpip: originator \S+ port \d+, target (\S+) port (\d+)")
BLOB = os.urandom(300 * 1024)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


class DataHostBed:
    def __init__(self, bed):
        self.bed = bed
        self.stub = stubftp.StubFtp(pasv_host="127.0.0.2", accept_timeout=2.0)
        self.stub.files["blob"] = BLOB
        self.runs = {}

    def proxy(self, flag):
        """The ftpssh started with FLAG (None: no --data-host option)."""
        if flag not in self.runs:
            self.runs[flag] = ftpssh.Ftpssh(self.bed, [self.stub], extra=[flag] if flag else [])
        run = self.runs[flag]
        run.assert_alive()
        return run

    def channels(self):
        return [(h, int(p)) for h, p in TARGET.findall(self.bed.sshd().log_text())]

    def close(self):
        try:
            for run in self.runs.values():
                run.stop(check=True)
        finally:
            self.stub.close()


@pytest.fixture(scope="module")
def dh(bed):
    if ftpssh.mode() != "ftpssh":
        pytest.skip("needs ftpssh")
    d = DataHostBed(bed)
    yield d
    d.close()


def new_channels(dh, before):
    return dh.channels()[before:]


def data_channel(dh, before, control_port):
    chans = [c for c in new_channels(dh, before) if c[1] != control_port]
    assert len(chans) == 1, "expected one data channel, sshd opened %s" % chans
    return chans[0]


@pytest.mark.parametrize("client_name", ["ftplib", "curl", "lftp"])
def test_reported_pasv_reaches_227_address(bed, dh, client_name, scratch):
    run = dh.proxy("--data-host=reported")
    c = clients.client(client_name, bed, run.target, user="plain", password="x")
    local = clients.download_path(bed, "datahost-%s" % client_name)
    scratch.append(local)
    before = len(dh.channels())
    r = c.retr("blob", local, mode="pasv")
    with open(local, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == BLOB_SHA, "%s: content differs" % client_name
    assert "PASV" in r.commands() and "EPSV" not in r.commands(), r.commands()
    got = [l for l in r.received if l.startswith("227")]
    assert got and "(127,0,0,1," in got[-1], "the client should get ftpssh's 227, got %s" % got
    host, port = data_channel(dh, before, dh.stub.port)
    assert (host, port) == ("127.0.0.2", dh.stub.pasv_ports[-1]), (
        "--data-host=reported: the data channel went to %s:%d, the 227 named 127.0.0.2:%d"
        % (host, port, dh.stub.pasv_ports[-1]))


def test_reported_stor(bed, dh):
    run = dh.proxy("--data-host=reported")
    ftp = clients.open_ftplib(run.target, "plain", "x", mode="pasv")
    try:
        payload = os.urandom(200 * 1024)
        ftp.storbinary("STOR up", io.BytesIO(payload))
        assert dh.stub.stored.get("up") == payload, "STOR via 127.0.0.2: content differs"
        ftp.quit()
    finally:
        ftp.close()


def test_reported_epsv_uses_control_host(bed, dh):
    run = dh.proxy("--data-host=reported")
    ftp = clients.open_ftplib(run.target, "plain", "x", mode="epsv")
    try:
        before = len(dh.channels())
        h = hashlib.sha256()
        ftp.retrbinary("RETR blob", h.update)
        assert h.hexdigest() == BLOB_SHA
        assert data_channel(dh, before, dh.stub.port) == ("127.0.0.1", dh.stub.epsv_ports[-1])
        ftp.quit()
    finally:
        ftp.close()


def test_reported_active_falls_back_to_pasv(bed, dh):
    """PORT from the client, a server without EPSV: ftpssh's own PASV
    upstream, its 227 names 127.0.0.2, and the channel goes there."""
    run = dh.proxy("--data-host=reported")
    ftp = clients.open_ftplib(run.target, "noepsv", "x", mode="active")
    try:
        start = len(dh.stub.lines)
        before = len(dh.channels())
        h = hashlib.sha256()
        ftp.retrbinary("RETR blob", h.update)
        assert h.hexdigest() == BLOB_SHA, "active RETR via PASV fallback: content differs"
        upstream = [l.split()[0].upper() for l in dh.stub.lines[start:]]
        assert upstream[:3] == ["TYPE", "EPSV", "PASV"] and "PORT" not in upstream, (
            "the server should see ftpssh's EPSV then PASV instead of PORT: %s" % upstream)
        assert data_channel(dh, before, dh.stub.port) == ("127.0.0.2", dh.stub.pasv_ports[-1])
        ftp.quit()
    finally:
        ftp.close()


@pytest.mark.parametrize("flag", [None, "--data-host=control"], ids=["default", "control"])
def test_control_ignores_227_address(bed, dh, flag):
    run = dh.proxy(flag)
    ftp = clients.open_ftplib(run.target, "plain", "x", mode="pasv")
    try:
        before = len(dh.channels())
        accepted = dh.stub.data_accepted
        got = []
        with pytest.raises(ftplib.error_temp) as e:
            ftp.retrbinary("RETR blob", got.append)
        assert str(e.value).startswith("425"), str(e.value)
        assert not got, "bytes arrived although the data channel went to the control host"
        host, port = data_channel(dh, before, dh.stub.port)
        assert (host, port) == ("127.0.0.1", dh.stub.pasv_ports[-1]), (
            "%s: the data channel went to %s:%d, expected the control host 127.0.0.1:%d"
            % (flag or "default", host, port, dh.stub.pasv_ports[-1]))
        assert dh.stub.data_accepted == accepted
        assert ftp.voidcmd("NOOP").startswith("200")
        ftp.quit()
    finally:
        ftp.close()
