"""Re-keying under load (issue 12 #1).

While a key exchange runs, libssh2 answers EAGAIN to every send, and a
call that got EAGAIN must be repeated with the very same arguments: it
keeps the packet the first call built. ftpssh once asked for a different
window adjust on the retry (libssh2 then sent the old amount and counted
the new one: downloads stalled for ever, or the surplus was dropped as
"beyond the window": data lost), and libssh2's own adjust inside
channel_read, resumed after a re-key, wrapped negative (sshd: "adjust ...
overflows remote window"). These tests break if any of that comes back:

- sshd with a small byte RekeyLimit: sequential 64 MiB RETRs re-key dozens
  of times each; every byte arrives (sha256) within a bounded time;
- sshd with a 1 s time limit: two 64 MiB download loops and a STOR loop
  side by side for a while; every transfer intact, one SSH connection from
  start to end (no drop, no reconnect), and sshd re-keyed many times.

`make soak-rekey` runs the second one ten times in a row, longer.
"""

import hashlib
import itertools
import os
import threading
import time

import pytest

from harness import clients, ftpssh, procs

pytestmark = pytest.mark.ftpssh_only

SERVER = "vsftpd"
BIG = 64 << 20
SOAK_SECONDS = float(os.environ.get("FTPSSH_REKEY_SECONDS", "12"))
_names = itertools.count(1)


def rekey_count(ssh):
    """Key exchanges sshd finished on its connections (the first included)."""
    return ssh.log_text().count("SSH2_MSG_NEWKEYS received")


def retr(target, name, stall=30):
    """sha256 and size of a RETR; a stall of `stall` s fails it."""
    ftp = clients.open_ftplib(target)
    ftp.sock.settimeout(stall)
    try:
        h = hashlib.sha256()
        n = [0]

        def take(b):
            h.update(b)
            n[0] += len(b)
        ftp.retrbinary("RETR " + name, take, blocksize=1 << 16)
        ftp.quit()
        return h.hexdigest(), n[0]
    finally:
        ftp.close()


def stor(target, local, name, stall=30):
    ftp = clients.open_ftplib(target)
    ftp.sock.settimeout(stall)
    try:
        with open(local, "rb") as f:
            ftp.storbinary("STOR " + name, f, blocksize=1 << 16)
        ftp.quit()
    finally:
        ftp.close()


def start(bed, ssh):
    # -vv shows libssh2's "would block" path in the log when a test fails
    return ftpssh.Ftpssh(bed, [bed.ftp_server(SERVER)], ssh=ssh)


@pytest.mark.timeout(240)
def test_byte_rekey_limit_sequential_downloads(bed, big64):
    """RekeyLimit 2M: three 64 MiB RETRs, ~32 re-keys each, all intact."""
    ssh = bed.extra_sshd("ssh-rekey-bytes", extra_config=["RekeyLimit 2M"])
    before = rekey_count(ssh)
    proxy = start(bed, ssh)
    try:
        name, want = big64
        for i in range(3):
            t0 = time.monotonic()
            got, size = retr(proxy.target, name)
            assert size == BIG, "RETR %d: %d of %d bytes" % (i, size, BIG)
            assert got == want, "RETR %d: wrong bytes" % i
            print("RETR %d: %.1f s" % (i, time.monotonic() - t0))
        rekeys = rekey_count(ssh) - before
        assert rekeys >= 3 * 20, "sshd re-keyed only %d times: the test proves nothing" % rekeys
        assert proxy.ssh_connections() == 1
        assert "lost" not in proxy.stderr()
    finally:
        proxy.stop()


def rekey_soak(bed, big64, seconds, ssh_name):
    """Two download loops and an upload loop for `seconds` through an sshd
    that re-keys every second. Returns (transfers done, re-keys)."""
    ssh = bed.extra_sshd(ssh_name, extra_config=["RekeyLimit default 1s"])
    before = rekey_count(ssh)
    proxy = start(bed, ssh)
    name, want = big64
    up = bed.uploads["1M"]
    srv = bed.ftp_server(SERVER)
    errors = []
    done = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds * procs.time_scale()

    def loop(kind, n):
        i = 0
        while time.monotonic() < deadline and not errors:
            i += 1
            try:
                if kind == "retr":
                    got, size = retr(proxy.target, name)
                    if size != BIG or got != want:
                        raise AssertionError("%d of %d bytes, sha256 %s" % (size, BIG, got[:12]))
                else:
                    remote = "rekey-up-%d-%d-%d" % (os.getpid(), n, i)
                    stor(proxy.target, up.path, remote)
                    path = srv.file(remote)
                    got = hashlib.sha256(open(path, "rb").read()).hexdigest()
                    os.unlink(path)
                    if got != up.sha256:
                        raise AssertionError("upload arrived damaged")
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append("%s loop %d, transfer %d: %r" % (kind, n, i, e))
                return
            with lock:
                done[0] += 1

    threads = [threading.Thread(target=loop, args=(k, n)) for n, k in
               enumerate(("retr", "retr", "stor"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds * procs.time_scale() + 120)
    try:
        assert not any(t.is_alive() for t in threads), "a transfer loop hung"
        assert not errors, "\n".join(errors) + "\n" + proxy.stderr()[-3000:]
        assert proxy.ssh_connections() == 1, "the SSH connection was replaced"
        text = proxy.stderr()
        assert "lost" not in text and "reconnecting" not in text, text[-3000:]
        assert "overflows remote window" not in ssh.log_text()
        rekeys = rekey_count(ssh) - before
        return done[0], rekeys
    finally:
        proxy.stop()


@pytest.mark.timeout(300)
def test_time_rekey_limit_concurrent_transfers(bed, big64):
    n, rekeys = rekey_soak(bed, big64, SOAK_SECONDS, "ssh-rekey-time")
    print("%d transfers intact over %d re-keys in %.0f s" % (n, rekeys, SOAK_SECONDS))
    assert n >= 3
    assert rekeys >= SOAK_SECONDS / 3, "only %d re-keys: the test proves nothing" % rekeys


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_rekey_soak(bed, big64):
    """make soak-rekey: ten runs in a row (FTPSSH_REKEY_RUNS, default 10)."""
    if os.environ.get("FTPSSH_SOAK") != "1":
        pytest.skip("soak test: make soak-rekey")
    runs = int(os.environ.get("FTPSSH_REKEY_RUNS", "10"))
    for r in range(runs):
        n, rekeys = rekey_soak(bed, big64, SOAK_SECONDS, "ssh-rekey-soak-%d" % r)
        print("run %d: %d transfers intact over %d re-keys" % (r + 1, n, rekeys))
