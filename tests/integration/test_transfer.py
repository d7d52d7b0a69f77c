"""Every FTP server x every client through ftpssh: login, LIST, RETR and
STOR of 0 B, 1 B, 1 MiB and 64 MiB, checked by size and sha256 on both
sides (FTPSSH_TEST_SIZES can narrow the sizes). Each client runs in its default passive flavour (curl: EPSV;
lftp, wget, ftplib: PASV); test_modes forces each flavour explicitly.
"""

import os

import pytest

from harness import clients, testbed

SIZES = testbed.matrix_sizes()


def check_same(path, size, sha256, what):
    got = os.path.getsize(path)
    assert got == size, "%s: %d bytes, expected %d" % (what, got, size)
    assert testbed.sha256_file(path) == sha256, "%s: sha256 differs (size is right)" % what


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("client_name", clients.CLIENTS)
def test_retr(bed, server, proxy, client_name, size, scratch):
    src = bed.data[size]
    local = clients.download_path(bed, "%s-%s" % (client_name, size))
    scratch.append(local)
    clients.client(client_name, bed, proxy.target).retr(src.name, local)
    check_same(local, src.size, src.sha256, "RETR %s by %s from %s" % (src.name, client_name, server.kind))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("client_name", clients.UPLOAD_CLIENTS)
def test_stor(bed, server, proxy, client_name, size, scratch):
    src = bed.uploads[size]
    name = clients.upload_name("%s-%s" % (client_name, size))
    scratch.append(server.file(name))
    clients.client(client_name, bed, proxy.target).stor(src.path, name)
    assert os.path.exists(server.file(name)), "STOR %s by %s: no file on %s" % (name, client_name, server.kind)
    check_same(server.file(name), src.size, src.sha256,
               "STOR %s by %s to %s" % (name, client_name, server.kind))


@pytest.mark.parametrize("client_name", clients.CLIENTS)
def test_list(bed, server, proxy, client_name):
    r = clients.client(client_name, bed, proxy.target).listing()
    for df in bed.data.values():
        assert df.name in r.output, "LIST by %s on %s lacks %s:\n%s" % (
            client_name, server.kind, df.name, r.output)
