"""Nothing leaks (issue 3): 1000 sessions of misbehaving and normal clients
through one ftpssh of its own, then its open-fd count and VmRSS (read from
/proc/PID) must be back within a small bound of where they were after a
warm-up.

The mix, cycled: small (1 KiB) normal RETRs over PASV and EPSV; clients
that drop a 64 MiB RETR half-way (close, and RST); PASV twice without
ever connecting; two connections to one data port; ABOR during a RETR
(ftplib's abort(), urgent data, and in band: IAC IP, IAC DM, ABOR, in
turn); a 64 KiB command line without newline;
bad 227/229 replies and an over-long line from the fake FTP server (see
test_hostile.py); and every LEAK_TIMEOUT_EVERY-th session a data port
left to its --data-timeout.

FTPSSH_LEAK_SESSIONS sets the number of sessions (default 1000; 200 when
FTPSSH_WRAP is set, e.g. valgrind). The figures are printed (pytest -s)
and recorded as junit properties (leak_fd_before, leak_fd_after, ...).

Under ASan, freed memory waits in a quarantine (256 MiB by default) before
reuse, so RSS climbs by that much whatever ftpssh does. This test's ftpssh
runs with quarantine_size_mb=4 (unless ASAN_OPTIONS already sets one):
still a use-after-free net for recently freed blocks, and RSS then says
something about ftpssh. Measured here: about 32 MiB, flat within +-4 MiB
over 2000 sessions (release build: 8 MiB, flat); without the change it
saturates near 350 MiB.
"""

import concurrent.futures
import ftplib
import hashlib
import os
import time
import traceback

import pytest

from harness import abuse, fakeftp, ftpssh, procs
from harness.fakeftp import Scenario

DEFAULT_SESSIONS = 200 if os.environ.get("FTPSSH_WRAP") else 1000
WORKERS = 8
WARMUP_ROUNDS = 8          # rounds of the whole mix before the baseline
FD_SLACK = 4
RSS_SLACK_KIB = 8 * 1024
SETTLE_LIMIT = 30.0        # seconds for closes to settle (before and after)
LEAK_TIMEOUT_EVERY = 50
# Short, so the timeout path runs often; longer under valgrind, whose
# slow event loop could otherwise let the timer win over a connection
# already waiting in the accept queue (libuv runs due timers first).
DATA_TIMEOUT = int(round(2 * procs.time_scale()))
ASAN_QUARANTINE_MB = 4
BIG = "leak-big-64M"
SMALL = "leak-1K"

BAD = [
    Scenario(pasv=["227 Entering Passive Mode (256,0,0,1,{p1},{p2}).\r\n"]),
    Scenario(pasv=["227 Entering Passive Mode (127,0,0,1,0,0).\r\n"]),
    Scenario(pasv=["227 Entering Passive Mode (127,0,0,1,{p1}).\r\n"]),
    Scenario(pasv=["227 Entering Passive Mode (127,0,0,\xb9,{p1},{p2}).\r\n"]),
    Scenario(epsv=["229 Entering Extended Passive Mode (|||70000|)\r\n"]),
    Scenario(epsv=["229 Entering Extended Passive Mode (|!|{port}|)\r\n"]),
]
ODD = [
    Scenario(pasv=["227 ={h},{p1},{p2}\r\n"]),
    Scenario(pasv=["227-Entering Passive Mode\r\n227 ({h},{p1},{p2})\r\n"]),
    Scenario(epsv=["229 Entering Extended Passive Mode (!!!{port}!)\r\n"]),
]


def sessions():
    return int(os.environ.get("FTPSSH_LEAK_SESSIONS", DEFAULT_SESSIONS))


class Small:
    """The 1 KiB file on vsftpd, shaped like a testbed DataFile."""

    def __init__(self, root):
        self.name = SMALL
        data = os.urandom(1024)
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.path = os.path.join(root, SMALL)
        with open(self.path, "wb") as f:
            f.write(data)
        os.chmod(self.path, 0o444)


class Mix:
    """The operations, each one whole session."""

    def __init__(self, pid, fake, fake_target, vs_target, small):
        self.pid = pid
        self.fake = fake
        self.fake_target = fake_target
        self.vs = vs_target
        self.small = small
        self.blob = os.urandom(8 * 1024)
        self.blob_sha = hashlib.sha256(self.blob).hexdigest()
        fake.files["blob"] = self.blob
        for i, s in enumerate(BAD):
            fake.scenarios["bad-%d" % i] = s
        for i, s in enumerate(ODD):
            fake.scenarios["odd-%d" % i] = s
        fake.scenarios["long"] = Scenario(pasv=["A" * (64 << 10)])
        self.ops = [
            ("normal-pasv", self.normal_pasv),
            ("normal-epsv", self.normal_epsv),
            ("disconnect-mid-retr", lambda i: abuse.op_disconnect_mid_retr(self.vs, BIG, read=256 << 10)),
            ("rst-mid-retr", lambda i: abuse.op_disconnect_mid_retr(self.vs, BIG, read=256 << 10, rst=True)),
            ("never-connect", lambda i: abuse.op_never_connect(self.vs)),
            ("connect-twice", lambda i: abuse.op_connect_twice(self.vs, self.small)),
            ("abor-during-retr", lambda i: abuse.op_abor_retr(self.vs, BIG, close_first=True,
                                                              oob=(i // len(self.ops)) % 2 == 0,
                                                              read=256 << 10)),
            ("long-client-line", lambda i: abuse.op_long_client_line(self.vs)),
            ("bad-passive-reply", self.bad_reply),
            ("odd-passive-reply", self.odd_reply),
            ("normal-pasv", self.normal_pasv),
            ("long-server-line", self.long_server_line),
        ]

    def pick(self, i):
        if i % LEAK_TIMEOUT_EVERY == LEAK_TIMEOUT_EVERY - 1:
            return "data-port-timeout", self.data_port_timeout
        return self.ops[i % len(self.ops)]

    def normal_pasv(self, i):
        abuse.op_normal(self.vs, self.small)

    def normal_epsv(self, i):
        ftp = abuse.login(self.vs, epsv=True)
        try:
            abuse.retr_check(ftp, self.small.name, self.small.sha256, self.small.size)
            ftp.quit()
        finally:
            ftp.close()

    def data_port_timeout(self, i):
        ftp = abuse.login(self.vs)
        try:
            _, port = abuse.pasv(ftp)
            # Watched in /proc, not probed: a probing connect would be taken
            # as the data connection if it came a little early. By its
            # socket, not its number: another session may be given the
            # same port number once this one is closed.
            mine = {ino for ino, (_, p) in abuse.listening_sockets(self.pid).items()
                    if p == port}
            assert mine, "no listener of ftpssh's on the PASV port %d" % port
            time.sleep(DATA_TIMEOUT)
            gone = abuse.wait_until(lambda: not mine & set(abuse.listening_sockets(self.pid)),
                                    3.0 * procs.time_scale(), step=0.1)
            assert gone, "data port %d still listening %.0fs after --data-timeout=%d" % (
                port, 3.0 * procs.time_scale(), DATA_TIMEOUT)
            abuse.noop_ok(ftp)
            ftp.quit()
        finally:
            ftp.close()

    def bad_reply(self, i):
        k = (i // len(self.ops)) % len(BAD)
        epsv = bool(BAD[k].epsv)
        ftp = abuse.login(self.fake_target, "bad-%d" % k, "x", epsv=epsv)
        try:
            try:
                got = ftp.sendcmd("EPSV" if epsv else "PASV")
            except ftplib.error_temp as e:
                got = str(e)
            assert got.startswith("425 ") and "ftpssh" in got, "bad-%d: %r" % (k, got)
            abuse.noop_ok(ftp)
            abuse.retr_check(ftp, "blob", self.blob_sha, len(self.blob))
            ftp.quit()
        finally:
            ftp.close()

    def odd_reply(self, i):
        k = (i // len(self.ops)) % len(ODD)
        ftp = abuse.login(self.fake_target, "odd-%d" % k, "x", epsv=bool(ODD[k].epsv))
        try:
            abuse.retr_check(ftp, "blob", self.blob_sha, len(self.blob))
            ftp.quit()
        finally:
            ftp.close()

    def long_server_line(self, i):
        ftp = abuse.login(self.fake_target, "long", "x")
        try:
            try:
                got = ftp.sendcmd("PASV")
            except ftplib.error_temp as e:
                got = str(e)
            assert got.startswith("421 ") and "ftpssh" in got, "over-long server line: %r" % got
        finally:
            ftp.close()


def run_batch(mix, first, count, deadline):
    """Sessions FIRST..FIRST+COUNT-1 on WORKERS threads; {kind: [errors]}."""
    failures = {}

    def one(i):
        kind, fn = mix.pick(i)
        if time.monotonic() > deadline:
            return kind, "skipped: out of time"
        try:
            fn(i)
            return kind, None
        except BaseException as e:  # noqa: B902 - collected and reported below
            return kind, "session %d: %r\n%s" % (i, e, traceback.format_exc(limit=3)[-1200:])

    with concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="leak") as pool:
        for kind, err in pool.map(one, range(first, first + count)):
            if err:
                failures.setdefault(kind, []).append(err)
    return failures


def settle(pid, fd_target, limit):
    """Wait (bounded) until PID's fd count is at most FD_TARGET; the count."""
    deadline = time.monotonic() + limit
    n = abuse.fd_count(pid)
    while n > fd_target and time.monotonic() < deadline:
        time.sleep(0.2)
        n = abuse.fd_count(pid)
    return n


def steady_fd_count(pid, limit):
    """The fd count once it has stopped changing for a second (bounded)."""
    deadline = time.monotonic() + limit
    last, since = abuse.fd_count(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        n = abuse.fd_count(pid)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            break
    return last


@pytest.mark.ftpssh_only
@pytest.mark.timeout(300)
def test_leak_1000_hostile_sessions(bed, record_testsuite_property, monkeypatch):
    n = sessions()
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    if "quarantine_size_mb" not in asan:
        monkeypatch.setenv("ASAN_OPTIONS", asan + ":quarantine_size_mb=%d" % ASAN_QUARANTINE_MB)
    vs_server = bed.ftp_server("vsftpd")
    big = vs_server.file(BIG)
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    os.chmod(big, 0o444)
    small = Small(vs_server.root)
    fake = fakeftp.FakeFtp()
    proxy = ftpssh.Ftpssh(bed, [fake, vs_server], extra=["--data-timeout=%d" % DATA_TIMEOUT])
    try:
        fake_target, vs_target = proxy.targets
        pid = proxy.pid
        mix = Mix(pid, fake, fake_target, vs_target, small)
        started = time.monotonic()
        # ~60 s on an idle 2-core machine; the margin is for a loaded one
        budget = 240 * procs.time_scale()
        deadline = started + budget

        # Warm up: every kind of session a few times, so that lazily grown
        # buffers, allocator arenas and libssh2's tables reach their size.
        warm = len(mix.ops) * WARMUP_ROUNDS
        failures = run_batch(mix, 0, warm, deadline)
        assert not failures, "warm-up sessions failed:\n%s\n%s" % (
            summary(failures), proxy.stderr()[-4000:])
        fd_before = steady_fd_count(pid, SETTLE_LIMIT)
        rss_before = abuse.vm_rss_kib(pid)
        table_before = abuse.fd_table(pid)

        t0 = time.monotonic()
        failures = run_batch(mix, warm, n, deadline)
        run_secs = time.monotonic() - t0
        proxy.assert_alive()

        fd_after = settle(pid, fd_before + FD_SLACK, SETTLE_LIMIT)
        rss_after = abuse.vm_rss_kib(pid)
        figures = ("ftpssh leak check: %d sessions in %.1fs (%d workers, ASan=%s): "
                   "open fds %d -> %d, VmRSS %d KiB -> %d KiB (%+d KiB)" % (
                       n, run_secs, WORKERS, "asan" in ftpssh.binary(), fd_before, fd_after,
                       rss_before, rss_after, rss_after - rss_before))
        print("\n" + figures)
        for k, v in (("sessions", n), ("seconds", round(run_secs, 1)), ("fd_before", fd_before),
                     ("fd_after", fd_after), ("rss_kib_before", rss_before), ("rss_kib_after", rss_after)):
            record_testsuite_property("leak_" + k, v)

        assert not failures, "%s\n%d of %d sessions failed:\n%s\n--- ftpssh stderr tail\n%s" % (
            figures, sum(len(v) for v in failures.values()), n, summary(failures), proxy.stderr()[-4000:])
        extra = {fd: link for fd, link in abuse.fd_table(pid).items() if table_before.get(fd) != link}
        assert fd_after <= fd_before + FD_SLACK, "%s\nfds not back after %.0fs; new ones: %s" % (
            figures, SETTLE_LIMIT, sorted(extra.items())[:40])
        assert rss_after - rss_before < RSS_SLACK_KIB, "%s\nVmRSS grew by %d KiB (bound %d KiB)" % (
            figures, rss_after - rss_before, RSS_SLACK_KIB)
        assert abuse.wait_until(lambda: not fake.open_sessions(), 10 * procs.time_scale()), (
            "%s\nthe fake FTP server still has %d connections open" % (figures, len(fake.open_sessions())))
        assert proxy.ssh_connections() == 1, "ftpssh holds %d SSH connections" % proxy.ssh_connections()
        proxy.stop(check=True)  # under ASan, LeakSanitizer runs at exit
    finally:
        proxy.stop(check=False)
        fake.close()
        for p in (big, small.path):
            try:
                os.unlink(p)
            except OSError:
                pass


def summary(failures):
    out = []
    for kind, errs in sorted(failures.items()):
        out.append("%s: %d failed; first:\n  %s" % (kind, len(errs), errs[0].replace("\n", "\n  ")))
    return "\n".join(out)
