"""Channel opens do not wait for each other (issue 12 #4).

sshd answers a direct-tcpip open only when its connect() to the target
ends. libssh2 keeps the state of one open per session, so one forward to
a host that drops SYNs held every other open for a minute: a client of
another, working forward got its 220 after 59.8 s. With the bundled
libssh2's patch 0003 every open is in flight on its own: the working
forward's clients are greeted at once, and the black-holed one fails its
own client alone (421 at the open deadline).
"""

import socket
import time

import pytest

from harness import clients, ftpssh, procs
from harness.blackhole import BlackHole

pytestmark = pytest.mark.ftpssh_only


def greeting_time(target, limit=15):
    t0 = time.monotonic()
    s = socket.create_connection((target.host, target.port), timeout=limit)
    try:
        s.settimeout(limit)
        line = s.makefile("rb").readline()
        return time.monotonic() - t0, line, s
    except OSError:
        s.close()
        raise


@pytest.mark.timeout(120)
def test_black_holed_forward_does_not_hold_up_another(bed):
    if ftpssh.libssh2_version()[1] != "bundled":
        pytest.skip("needs the bundled libssh2 (patch 0003); this build links the system's")
    hole = BlackHole()
    vsftpd = bed.ftp_server("vsftpd")
    proxy = ftpssh.Ftpssh(bed, [hole, vsftpd])
    held = []
    try:
        bad, good = proxy.targets
        # clients of the black-holed forward first: their opens hang
        for _ in range(3):
            s = socket.create_connection((bad.host, bad.port), timeout=10)
            held.append(s)
        time.sleep(0.5)
        worst = 0
        for _ in range(5):
            secs, line, s = greeting_time(good)
            held.append(s)
            assert line.startswith(b"220"), line
            worst = max(worst, secs)
        print("working forward's greeting: worst %.3f s" % worst)
        assert worst < 1.0 * procs.time_scale(), "greeting took %.1f s" % worst
        # a real transfer on the working forward meanwhile
        clients.assert_retr_intact(good, bed.data["1M"])
        # the black-holed clients are told at the open deadline (20 s)
        s = held[0]
        s.settimeout(40 * procs.time_scale())
        line = s.makefile("rb").readline()
        assert line.startswith(b"421"), line
        assert b"cannot reach the FTP server" in line, line
        proxy.assert_alive()
    finally:
        for s in held:
            s.close()
        proxy.stop()
        hole.close()
