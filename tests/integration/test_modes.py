"""One PASV and one EPSV transfer (RETR + STOR of 1 MiB) per server and
per client that can be told which to use: curl (--disable-epsv or its
EPSV default), lftp (ftp:prefer-epsv; lftp connects to the address in
the 227, so it proves the rewritten address), ftplib (PASV trusting the
227 address, or EPSV sent by hand).

Under ftpssh each transfer must also be seen by sshd as a direct-tcpip
channel to the server's data port, and the port the client was given
must not be that port: the data went through the SSH connection, not
straight to the server (on loopback both would work).
"""

import os
import re

import pytest

from harness import clients, ftpssh, testbed

PASV_REPLY = re.compile(r"^227 .*?(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")
EPSV_REPLY = re.compile(r"^229 .*\((.)\1\1(\d+)\1\)")


def passive_ports(result):
    """(address, port) of every 227/229 the client received."""
    out = []
    for line in result.received:
        m = PASV_REPLY.match(line)
        if m:
            n = [int(x) for x in m.groups()]
            out.append(("%d.%d.%d.%d" % tuple(n[:4]), n[4] * 256 + n[5]))
            continue
        m = EPSV_REPLY.match(line)
        if m:
            out.append((None, int(m.group(2))))
    return out


def check_flavour(result, mode, what):
    cmds = result.commands()
    codes = result.codes()
    if mode == "pasv":
        assert "PASV" in cmds and "EPSV" not in cmds, "%s: expected PASV only, sent %s" % (what, cmds)
        assert "227" in codes, "%s: no 227 reply:\n%s" % (what, result.transcript[-3000:])
    else:
        assert "EPSV" in cmds and "PASV" not in cmds, "%s: expected EPSV only, sent %s" % (what, cmds)
        assert "229" in codes, "%s: no 229 reply:\n%s" % (what, result.transcript[-3000:])


def check_through_ssh(bed, server, before, result, what):
    if ftpssh.mode() != "ftpssh":
        return
    opened = bed.sshd().direct_tcpip_targets()[before:]
    data_ports = [p for p in opened if p != server.port]
    assert data_ports, "%s: sshd opened no direct-tcpip channel to a data port (saw %s)" % (what, opened)
    given = passive_ports(result)
    assert given, "%s: no passive reply parsed:\n%s" % (what, result.transcript[-3000:])
    for addr, port in given:
        assert addr in (None, "127.0.0.1"), "%s: 227 names %s, not 127.0.0.1" % (what, addr)
        assert port not in data_ports, (
            "%s: the client was given the server's own data port %d: reply not rewritten" % (what, port))


@pytest.mark.parametrize("mode", ["pasv", "epsv"])
@pytest.mark.parametrize("client_name", clients.MODE_CLIENTS)
def test_passive_flavour(bed, server, proxy, client_name, mode, scratch):
    c = clients.client(client_name, bed, proxy.target)
    ssh = bed.sshd()

    src = bed.data["1M"]
    local = clients.download_path(bed, "%s-%s" % (client_name, mode))
    scratch.append(local)
    before = len(ssh.direct_tcpip_targets())
    what = "%s %s RETR from %s" % (client_name, mode.upper(), server.kind)
    r = c.retr(src.name, local, mode=mode)
    check_flavour(r, mode, what)
    assert testbed.sha256_file(local) == src.sha256, what + ": content differs"
    check_through_ssh(bed, server, before, r, what)

    up = bed.uploads["1M"]
    name = clients.upload_name("%s-%s" % (client_name, mode))
    scratch.append(server.file(name))
    before = len(ssh.direct_tcpip_targets())
    what = "%s %s STOR to %s" % (client_name, mode.upper(), server.kind)
    r = c.stor(up.path, name, mode=mode)
    check_flavour(r, mode, what)
    assert os.path.exists(server.file(name)), what + ": no file on the server"
    assert testbed.sha256_file(server.file(name)) == up.sha256, what + ": content differs"
    check_through_ssh(bed, server, before, r, what)
