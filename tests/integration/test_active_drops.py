"""An active-mode transfer whose connect to the client outlives two SSH
connections (issue 12, finding 9).

A pump used to take the SSH connection when it was created, at the
transfer command, but to open its channel only once ftpssh's connect to
the client's data port completed. A connection that dropped in between
was freed (it had no channel of the pump's to keep it), and the pump then
opened its channel on freed memory. Now it takes the connection that is
up when its channel opens.

The old pump could only meet a freed connection if its session outlived
the drop of its own channel (the channel keeps its connection allocated)
and sent the transfer command on the next connection. A session does
outlive its channel while the client has not read what the server said:
so the client here has a small receive buffer and reads nothing.

The sequence, each step waited for on something observable:

1. Own sshd, a stub FTP server, ftpssh at -v. The client logs in, sends
   PORT naming a black-holed listener of its own (backlog full: ftpssh's
   connect to it will hang), then HELP, which the stub answers with a
   64 MiB reply; ftpssh's socket to the client fills up (ss -m: queued
   bytes at the send buffer's size), the rest waits in ftpssh.
2. Drop 1: sshd's per-connection processes killed; ftpssh reconnects
   (connection 2). The client sends RETR: ftpssh connects to the black
   hole (SYN_SENT in /proc/net/tcp).
3. Drop 2 while that connect hangs; ftpssh reconnects (connection 3).
4. The black hole lets connections in: the connect completes.

Then: ftpssh is alive with no ASan report; the client, reading at last,
gets the reply as far as it came and its session closes (no transfer
reported); a new session's RETR arrives intact (sha256). On the build
before the fix (8ed86a2^) step 4 is ASan's heap-use-after-free in
mux_chan_open (from mux_pump_start, active_connected_cb) on connection
2's memory; 8ed86a2 passes.
"""

import hashlib
import os
import re
import socket
import subprocess

import pytest

from harness import blackhole, clients, ftpssh, procs, stubftp, tunnel

pytestmark = pytest.mark.ftpssh_only

BLOB = os.urandom((1 << 20) + 3)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
# far more than ftpssh's socket to the client (4 MiB at most here) and the
# SSH path can hold: the reply is still coming when the link drops
HELP_BYTES = 64 << 20


def sockets_to(pid, port, state):
    """How many TCP sockets of process PID towards 127.0.0.1:PORT are in
    STATE (hex, as /proc/net/tcp writes it: 01 established, 02 SYN_SENT)."""
    try:
        inodes = procs.socket_inodes(pid)
    except OSError:
        return 0
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            remote, st, inode = fields[2], fields[3], fields[9]
            if inode in inodes and st == state and int(remote.split(":")[1], 16) == port:
                n += 1
    return n


def drop_and_wait(ssh, run, ups):
    """Kill sshd's per-connection processes; wait until ftpssh has noticed
    and its connection number UPS is up."""
    lost = run.stderr().count("reconnecting in")
    assert ssh.kill_connections(), "no sshd connection process to kill"
    tunnel.wait_for(lambda: run.stderr().count("reconnecting in") > lost, 10,
                    "notice of the dropped connection", run)
    tunnel.wait_for(lambda: run.stderr().count(" is up") >= ups, 15,
                    "SSH connection %d" % ups, run)


def open_black_hole(bh, taken):
    """Let connections in: the fillers go (their retried SYNs would
    compete for the one place in the queue) and whatever waits in the
    queue is accepted, into TAKEN. Called again while waiting, as the
    queue holds one connection at a time."""
    for s in bh.fillers:
        s.close()
    bh.fillers = []
    bh.listener.setblocking(False)
    while True:
        try:
            conn, _ = bh.listener.accept()
        except BlockingIOError:
            return
        taken.append(conn)


def read_to_close(sock, timeout=15.0):
    """Everything until the peer closes (None: still open after TIMEOUT
    seconds without a byte)."""
    sock.settimeout(timeout * procs.time_scale())
    got = []
    while True:
        try:
            b = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        except socket.timeout:
            return None
        if not b:
            break
        got.append(b)
    return b"".join(got)


def slow_client(target):
    """A logged-in control connection with a small receive buffer, so a
    long reply it does not read backs up into ftpssh at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10 * procs.time_scale())
    sock.connect((target.host, target.port))
    assert tunnel.read_reply(sock).startswith("220")
    for line, code in (("USER anonymous", "331"), ("PASS x", "230")):
        sock.sendall(line.encode() + b"\r\n")
        r = tunnel.read_reply(sock)
        assert r.startswith(code), "%s: %r" % (line, r)
    return sock


def client_socket_full(server_port, client_port):
    """Can ftpssh's socket to the client take no more (queued bytes at
    its send buffer's size)? Then its next write to the client stops
    short and the rest of the reply waits inside ftpssh. From ss -m."""
    out = subprocess.run(["ss", "-tmnH", "state", "established",
                          "( sport = :%d and dport = :%d )" % (server_port, client_port)],
                         capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"\btb(\d+),.*\bw(\d+),", out)
    return m is not None and int(m.group(2)) >= int(m.group(1))


@pytest.mark.timeout(90)
def test_active_connect_outlives_two_ssh_connections(bed):
    ssh = bed.extra_sshd("ssh-active-drops")
    stub = stubftp.StubFtp(pasv_host="127.0.0.1", help_bytes=HELP_BYTES)
    stub.files["blob"] = BLOB
    bh = blackhole.BlackHole()
    run = None
    ctl = None
    taken = []
    try:
        run = ftpssh.Ftpssh(bed, [stub], ssh=ssh, extra=["-v"])
        ctl = slow_client(run.target)
        h = "127,0,0,1,%d,%d" % (bh.port >> 8, bh.port & 255)
        ctl.sendall(("PORT %s\r\n" % h).encode())
        r = tunnel.read_reply(ctl)
        assert r.startswith("200"), "PORT to the client's own black-holed listener: %r" % r
        ctl.sendall(b"HELP\r\n")  # and read nothing until the end
        cport = ctl.getsockname()[1]
        tunnel.wait_for(lambda: client_socket_full(run.target.port, cport), 20,
                        "ftpssh's socket to the client to fill up", run)

        drop_and_wait(ssh, run, 2)
        ctl.sendall(b"RETR blob\r\n")
        tunnel.wait_for(lambda: sockets_to(run.pid, bh.port, "02") == 1, 10,
                        "ftpssh's connect to the black-holed data port (SYN_SENT)", run)

        drop_and_wait(ssh, run, 3)
        assert sockets_to(run.pid, bh.port, "02") == 1, (
            "the connect to the client ended before the second drop:\n" + run.describe())
        # it completes at a SYN retransmission (1, 3, 7, 15 s after the
        # first): what ftpssh does then is what this test is about
        tunnel.wait_for(lambda: open_black_hole(bh, taken)
                        or sockets_to(run.pid, bh.port, "02") == 0, 20,
                        "the connect to the client to complete", run)
        assert taken, "nothing connected to the client's data port"
        # the scenario needs the session still there when the connect
        # completes (otherwise no pump would open a channel)
        assert sockets_to(run.pid, cport, "01") == 1, (
            "the client's session was gone before its connect completed: the test no longer "
            "reaches the pump's channel open\n" + run.describe())

        # The client reads at last: the reply as far as it came, then the
        # end of the session (a 421 inside an unfinished multi-line reply
        # would be read as text, so the close is the signal); never a
        # transfer.
        got = read_to_close(ctl)
        assert got is not None, "the client's session stayed open after RETR:\n" + run.describe()
        assert got.startswith(b"214-"), "the client got %r" % got[:100]
        for code in (b"150", b"226"):
            assert b"\n" + code + b" " not in got, "a transfer was reported: %r" % got[-300:]
        run.assert_alive()

        ftp = clients.open_ftplib(run.target)
        try:
            h = hashlib.sha256()
            ftp.retrbinary("RETR blob", h.update)
        finally:
            ftp.quit()
        assert h.hexdigest() == BLOB_SHA, "RETR on SSH connection 3: wrong sha256"
        run.assert_alive()
        print("client read %d bytes, then its session closed; stub sent %d of %d reply bytes"
              % (len(got), stub.help_sent, HELP_BYTES))
    finally:
        if ctl is not None:
            ctl.close()
        for c in taken:
            c.close()
        bh.close()
        try:
            if run is not None:
                run.stop(check=True)
        finally:
            ssh.kill_connections()
            ssh.stop()
            stub.close()
