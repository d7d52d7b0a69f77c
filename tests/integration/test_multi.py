"""Several -L: every FTP server of the test bed through ONE ftpssh, hence
one SSH connection; each listener reaches its own server (told apart by
its banner), with transfers interleaved between them.
"""

import hashlib
import io

import pytest

from harness import clients, ftpssh, testbed


@pytest.fixture
def multi(bed):
    servers = [bed.ftp_server(k) for k in testbed.SERVER_KINDS]
    gw = ftpssh.start_gateway(bed, servers)
    yield gw
    gw.stop(check=True)


def test_several_forwards_one_connection(bed, multi):
    sessions = []
    for target in multi.targets:
        ftp = clients.open_ftplib(target)
        welcome = ftp.getwelcome()
        assert target.server.banner in welcome, (
            "listener %d (announced for -L #%d, %s) greets with %r: listeners and -L "
            "options are not in the same order, or a listener reaches the wrong server"
            % (target.port, multi.targets.index(target) + 1, target.server.kind, welcome))
        sessions.append((target.server, ftp))

    # Interleave: every session retrieves, then every session stores,
    # while all control connections stay open.
    for srv, ftp in sessions:
        h = hashlib.sha256()
        ftp.retrbinary("RETR data-1M", h.update, blocksize=1 << 16)
        assert h.hexdigest() == bed.data["1M"].sha256, "RETR through the %s forward" % srv.kind
    names = []
    for srv, ftp in sessions:
        name = clients.upload_name("multi-" + srv.kind)
        names.append((srv, name))
        ftp.storbinary("STOR " + name, io.BytesIO(b"via " + srv.kind.encode()))
    for srv, name in names:
        with open(srv.file(name), "rb") as f:
            assert f.read() == b"via " + srv.kind.encode(), "STOR through the %s forward" % srv.kind

    if ftpssh.mode() == "ftpssh":
        n = multi.ssh_connections()
        assert n == 1, "ftpssh with %d -L holds %d SSH connections, expected 1" % (len(sessions), n)
    for _, ftp in sessions:
        ftp.quit()
    multi.assert_alive()


@pytest.mark.ftpssh_only
def test_dash_l_login_option(bed):
    """`-l login host` works like `login@host`."""
    run = ftpssh.Ftpssh(bed, [bed.ftp_server("pyftpdlib")], use_l_option=True)
    try:
        ftp = clients.open_ftplib(run.target)
        assert ftp.nlst()
        ftp.quit()
    finally:
        run.stop(check=True)
