"""20 clients at once per server, each logged in before any transfer
starts, each doing a RETR and a STOR of its own 1 MiB, all bytes checked.
A fixed list of forwarded data ports could not serve this; on-demand
one-shot listeners must. Under ftpssh all of it rides one SSH connection.
"""

import hashlib
import os
import threading

import pytest

from harness import clients, ftpssh

CLIENTS = 20


@pytest.mark.timeout(240)
def test_twenty_clients_at_once(bed, server, proxy, scratch):
    src = bed.data["1M"]
    logged_in = threading.Barrier(CLIENTS, timeout=60 * clients.procs.time_scale())
    errors = [None] * CLIENTS
    names = [clients.upload_name("conc-%d" % i) for i in range(CLIENTS)]
    payloads = [os.urandom(1 << 20) for _ in range(CLIENTS)]
    for n in names:
        scratch.append(server.file(n))

    def one(i):
        ftp = None
        try:
            ftp = clients.open_ftplib(proxy.target)
            logged_in.wait()
            h = hashlib.sha256()
            ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
            if h.hexdigest() != src.sha256:
                raise AssertionError("RETR content differs")
            up = _Reader(payloads[i])
            ftp.storbinary("STOR " + names[i], up, blocksize=1 << 16)
            ftp.quit()
        except BaseException as e:  # noqa: B902 - reported below with the transcript
            errors[i] = "client %d: %r\n%s" % (i, e, ftp.transcript()[-1500:] if ftp else "")
            if ftp:
                ftp.close()
            try:
                logged_in.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(200 * clients.procs.time_scale())
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not hung, "clients %s still running" % hung
    failed = [e for e in errors if e]
    assert not failed, "%d of %d clients failed:\n%s" % (len(failed), CLIENTS, "\n".join(failed[:5]))

    for i, n in enumerate(names):
        with open(server.file(n), "rb") as f:
            got = f.read()
        assert got == payloads[i], "client %d: STOR %s differs (%d bytes of %d)" % (i, n, len(got), len(payloads[i]))

    if ftpssh.mode() == "ftpssh":
        assert proxy.ssh_connections() == 1, "ftpssh holds %d connections to sshd" % proxy.ssh_connections()


class _Reader:
    """File-like view of bytes for storbinary."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def read(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b
