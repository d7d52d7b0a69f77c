"""A download that its client reads in bursts arrives whole and in order.

The pump hands each buffer read from the channel to the client's socket
with uv_try_write first and queues a uv_write only for what the socket did
not take (a queued uv_write costs an epoll_ctl per buffer on libuv 1.44:
31k per GiB). That relies on libuv's rule that uv_try_write takes nothing
while an earlier uv_write on the same stream is still queued, so that no
buffer overtakes the rest of the one before it. A client with a tiny
receive window that stops reading now and then makes the socket take part
of a buffer, queue the rest, and see new buffers arrive meanwhile: a byte
out of place, lost or doubled changes the sha256.
"""

import hashlib
import os
import time

import pytest

from harness import clients, ftpssh, procs

pytestmark = pytest.mark.ftpssh_only

BURST = 256 << 10   # bytes read between pauses
PAUSE = 0.01        # seconds


@pytest.mark.timeout(180)
def test_bursty_reader_gets_every_byte_in_order(bed, big64):
    name, sha = big64
    proxy = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")])
    r = None
    try:
        r = clients.RawRetr(proxy.target, name, rcvbuf=4096)
        h = hashlib.sha256()
        got = since_pause = pauses = 0
        deadline = time.monotonic() + 120 * procs.time_scale()
        while time.monotonic() < deadline:
            b = r.data.recv(65536)
            if not b:
                break
            h.update(b)
            got += len(b)
            since_pause += len(b)
            if since_pause >= BURST:
                since_pause = 0
                pauses += 1
                time.sleep(PAUSE)
        else:
            pytest.fail("download not done in time: %d bytes" % got)
        r.expect(b"226")
        assert pauses > 100, "only %d pauses: the reader was never behind" % pauses
        assert got == 64 << 20, "%d bytes" % got
        assert h.hexdigest() == sha, "bytes out of order, lost or doubled"
        proxy.assert_alive()
    finally:
        if r is not None:
            r.close()
        proxy.stop()


UPLOAD = 32 << 20


@pytest.mark.timeout(180)
def test_upload_goes_in_full_packets(bed, tmp_path):
    """The pump reads uploads in buffers of two libssh2 packets. With 64 KiB
    buffers every buffer went as 32700 + 32700 + 136 bytes: half as many
    packets again, each a send(), a MAC and padding here and a wake-up of
    sshd (1 GiB: 49k packets instead of 33k, ftpssh's CPU +7%). The
    packets are counted as ftpssh's write syscalls: an upload writes
    nothing else but its control replies."""
    src = tmp_path / "up-32M"
    h = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(UPLOAD >> 20):
            b = os.urandom(1 << 20)
            h.update(b)
            f.write(b)
    srv = bed.ftp_server("vsftpd")
    proxy = ftpssh.Ftpssh(bed, [srv])
    name = "pump-full-packets"
    try:
        ftp = clients.open_ftplib(proxy.target)
        try:
            ftp.voidcmd("TYPE I")
            w0 = procs.io_count(proxy.pid, "syscw")
            with open(src, "rb") as f:
                ftp.storbinary("STOR " + name, f, blocksize=1 << 20)
            writes = procs.io_count(proxy.pid, "syscw") - w0
            ftp.quit()
        finally:
            ftp.close()
        with open(srv.file(name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == h.hexdigest(), "upload damaged"
        clients.assert_upload_packets(writes, UPLOAD, 1.35)
        proxy.assert_alive()
    finally:
        try:
            os.unlink(srv.file(name))
        except OSError:
            pass
        proxy.stop()
