"""Staying up, and stopping cleanly.

- The SSH connection dies in the middle of a 64 MiB RETR (sshd's
  per-connection processes killed, its listener stopped): the client gets
  an error, never a short file reported as success; an idle session gets
  421; ftpssh stays alive, tells new clients 421 while the tunnel is down,
  retries with backoff, and once sshd is back (same config, same port) new
  sessions transfer intact again. Auth or host-key failures while
  reconnecting end ftpssh (exit 5 / 4) instead of retrying forever.
- SIGTERM during a transfer: no new clients, the transfer completes with
  the right sha256, then exit 0; a second signal exits at once.
- Keepalives reach sshd at -o ServerAliveInterval; a silent server is
  noticed after ServerAliveCountMax unanswered ones; an idle connection's
  loss is noticed at once.
- Exit statuses of startup failures: 2 usage, 3 no SSH server, 6 cannot
  listen.

Tests that break the SSH connection use an sshd of their own, never the
shared one the shared ftpssh processes use.
"""

import hashlib
import itertools
import os
import signal
import socket
import time

import pytest

from harness import clients, ftpssh, procs, testbed, tunnel

pytestmark = pytest.mark.ftpssh_only

SERVER = "vsftpd"
BIG = 64 << 20
_names = itertools.count(1)

TUNNEL_LOST = "421 ftpssh: connection to the FTP server lost (SSH tunnel down)"
TUNNEL_DOWN = "421 ftpssh: SSH tunnel down, retrying; try again shortly"


@pytest.fixture
def own_sshd(bed):
    """An sshd for this test alone (it will be killed and restarted)."""
    ssh = bed.extra_sshd("ssh-resil-%d" % next(_names))
    yield ssh
    ssh.kill_connections()
    ssh.stop()


def start(bed, ssh=None, **kw):
    return ftpssh.Ftpssh(bed, [bed.ftp_server(SERVER)], ssh=ssh, **kw)


def retr_sha256(target, name):
    ftp = clients.open_ftplib(target)
    try:
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + name, h.update, blocksize=1 << 16)
        return h.hexdigest()
    finally:
        ftp.quit()


def file_sha256(path):
    return testbed.sha256_file(path)


def break_tunnel(ssh):
    """sshd goes away: listener stopped (reconnects are refused), then its
    per-connection processes killed (the SSH connection drops)."""
    ssh.stop()
    killed = ssh.kill_connections()
    assert killed, "no sshd connection process found: was ftpssh connected to %s?" % ssh.name
    return killed


def assert_refuses_new_clients(target):
    text, closed = tunnel.greeting(target)
    assert text.startswith(TUNNEL_DOWN), "a new client while the tunnel is down got %r" % text
    assert closed, "the new client was told %r but not closed" % text


# --- the SSH connection dies ---------------------------------------------------

@pytest.mark.timeout(120)
def test_sshd_killed_mid_retr_then_back(bed, own_sshd, big64, scratch):
    name, sha = big64
    run = start(bed, own_sshd)
    try:
        idle = tunnel.Control(run.target)
        raw = tunnel.RawRetr(run.target, name)  # a reader that does not know the size
        raw.read(1 << 20)
        dl = tunnel.SlowRetr(bed, run.target, name, rate="16M")
        scratch += [dl.local, dl.err_path]
        dl.wait_bytes(4 << 20)

        break_tunnel(own_sshd)
        at_kill = dl.received()
        assert at_kill < BIG, "the download was over before the kill"

        # curl (which knows the size from SIZE) fails, visibly, no hang.
        rc = dl.wait(timeout=30)
        size = dl.received()
        if rc == 0:
            assert size == BIG and file_sha256(dl.local) == sha, (
                "curl reported success with a short or wrong file (%d of %d bytes):\n%s"
                % (size, BIG, dl.stderr()))
            pytest.fail("the download completed although sshd was killed at %d bytes" % at_kill)
        assert size < BIG, "curl failed (%d) yet got the whole file:\n%s" % (rc, dl.stderr())

        # The hand-driven RETR: its data connection ends, and the final
        # reply is an error, never 226.
        state = raw.drain()
        assert state in ("eof", "reset"), "data connection still open 10 s after the tunnel died"
        final = raw.final_reply()
        assert final.startswith(TUNNEL_LOST), (
            "after %d of %d bytes and the tunnel gone, the client was told %r" % (raw.got, BIG, final))
        raw.close()

        # The idle session is told, then closed.
        reply = idle.reply(timeout=10)
        assert reply.startswith(TUNNEL_LOST), "idle session got %r" % reply
        assert tunnel.wait_closed(idle.sock), "idle session not closed after %r" % reply
        idle.close()

        # ftpssh lives on, says it will retry, and turns new clients away.
        run.assert_alive()
        tunnel.wait_for(lambda: "reconnecting in 1 s" in run.stderr(), 10, "'reconnecting in 1 s'", run)
        assert_refuses_new_clients(run.target)
        # one refused retry later it backs off further
        tunnel.wait_for(lambda: "reconnecting in 2 s" in run.stderr(), 10, "'reconnecting in 2 s'", run)
        assert_refuses_new_clients(run.target)

        # sshd back on the same port: within the backoff bound (next try
        # in at most 2 s, then 4 s) a new session transfers intact.
        own_sshd.start()
        t0 = time.monotonic()
        tunnel.wait_for(lambda: run.stderr().count(" is up") >= 2, 10, "reconnect", run)
        up_after = time.monotonic() - t0
        assert retr_sha256(run.target, "data-1M") == bed.data["1M"].sha256
        dl2 = tunnel.SlowRetr(bed, run.target, name, rate="2G")
        scratch += [dl2.local, dl2.err_path]
        assert dl2.wait(timeout=60) == 0, dl2.stderr()
        assert file_sha256(dl2.local) == sha, "64 MiB RETR after the reconnect: wrong sha256"
        assert run.ssh_connections() == 1
        print("reconnected %.1f s after sshd came back; %d of %d bytes before the kill, "
              "curl exit %d with %d bytes; hand-driven RETR: data %s after %d bytes, then %r"
              % (up_after, at_kill, BIG, rc, size, state, raw.got, final))
    finally:
        run.stop()


@pytest.mark.timeout(60)
def test_reconnect_with_changed_host_key_exits_4(bed, own_sshd):
    run = start(bed, own_sshd)
    try:
        break_tunnel(own_sshd)
        tunnel.wait_for(lambda: "reconnecting in" in run.stderr(), 10, "'reconnecting in'", run)
        # the server comes back as someone else
        os.unlink(own_sshd.host_key)
        os.unlink(own_sshd.host_key + ".pub")
        testbed._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", own_sshd.host_key])
        own_sshd.start()
        rc = run.wait_exit(timeout=15)
        text = run.stderr()
        assert rc == 4, "expected exit 4 after reconnecting to a changed host key, got %s:\n%s" % (rc, text)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text, text
        run.assert_clean()
    finally:
        run.stop(check=False)


@pytest.mark.timeout(60)
def test_reconnect_with_revoked_key_exits_5(bed, own_sshd):
    run = start(bed, own_sshd)
    try:
        break_tunnel(own_sshd)
        tunnel.wait_for(lambda: "reconnecting in" in run.stderr(), 10, "'reconnecting in'", run)
        with open(own_sshd.authorized_keys, "w"):
            pass  # the key is no longer authorized
        own_sshd.start()
        rc = run.wait_exit(timeout=15)
        text = run.stderr()
        assert rc == 5, "expected exit 5 after reconnecting with a revoked key, got %s:\n%s" % (rc, text)
        assert "Permission denied" in text, text
        run.assert_clean()
    finally:
        run.stop(check=False)


@pytest.mark.timeout(60)
def test_idle_connection_loss_noticed(bed, own_sshd):
    """A fresh ftpssh that has carried no FTP session yet notices at once
    (sshd's post-auth packets still unread must not hide the EOF)."""
    run = start(bed, own_sshd)
    try:
        break_tunnel(own_sshd)
        tunnel.wait_for(lambda: "reconnecting in 1 s" in run.stderr(), 5,
                        "notice of the lost connection", run)
        assert "lost" in run.stderr()
    finally:
        run.stop(check=False)


# --- keepalive -------------------------------------------------------------------

def test_keepalive_reaches_sshd(bed, own_sshd):
    run = start(bed, own_sshd, extra=["-o", "ServerAliveInterval=1"])
    try:
        tunnel.wait_for(lambda: "rtype keepalive@" in own_sshd.log_text(), 5,
                        "keepalive request in sshd's log", run)
    finally:
        run.stop()


@pytest.mark.timeout(60)
def test_silent_server_noticed_by_keepalive(bed, own_sshd):
    """sshd stopped (SIGSTOP): TCP stays up, SSH goes silent; keepalives
    that ask for a reply notice within interval x count."""
    run = start(bed, own_sshd, extra=["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
    try:
        with procs.stopped(own_sshd.connection_pids()) as pids:
            assert pids, "no sshd connection process to stop"
            tunnel.wait_for(lambda: "reconnecting in" in run.stderr(), 8,
                            "notice of the silent server", run)
    finally:
        # the dropped connection's session and channels freed: ASan says
        run.stop(check=True)


# --- SIGTERM / SIGINT ------------------------------------------------------------

@pytest.mark.timeout(90)
def test_sigterm_lets_the_running_transfer_finish(bed, big64, scratch):
    if procs.time_scale() > 1:
        # ftpssh drains for at most 30 s; under memcheck a 64 MiB transfer
        # takes longer than that, so the bound, not a bug, would cut it.
        pytest.skip("under FTPSSH_WRAP the transfer outlasts ftpssh's 30 s drain bound")
    name, sha = big64
    run = start(bed)
    dl = tunnel.SlowRetr(bed, run.target, name, rate="24M")  # about 2.7 s
    scratch += [dl.local, dl.err_path]
    try:
        dl.wait_bytes(2 << 20)
        os.kill(run.pid, signal.SIGTERM)
        # no new clients from now on
        tunnel.wait_for(lambda: not procs.can_connect(run.target.port), 5,
                        "the listener to close after SIGTERM", run)
        assert dl.received() < BIG, "the transfer was over before SIGTERM took effect"
        assert run.alive(), "ftpssh exited with a transfer running:\n" + run.describe()

        assert dl.wait(timeout=60) == 0, "the transfer running at SIGTERM failed:\n" + dl.stderr()
        assert file_sha256(dl.local) == sha, "the transfer running at SIGTERM: wrong sha256"
        rc = run.wait_exit(timeout=10)
        text = run.stderr()
        assert rc == 0, "ftpssh exit status %s after draining:\n%s" % (rc, text)
        assert "no new clients; stopping when the 1 running transfer(s) end" in text, text
        run.assert_clean()
    finally:
        run.stop(check=False)


@pytest.mark.timeout(60)
def test_second_signal_exits_at_once(bed, big64, scratch):
    name, _ = big64
    run = start(bed)
    dl = tunnel.SlowRetr(bed, run.target, name, rate="8M")  # 8 s: far from over
    scratch += [dl.local, dl.err_path]
    try:
        dl.wait_bytes(1 << 20)
        os.kill(run.pid, signal.SIGINT)
        tunnel.wait_for(lambda: "no new clients" in run.stderr(), 5, "the first signal", run)
        os.kill(run.pid, signal.SIGTERM)
        t0 = time.monotonic()
        rc = run.wait_exit(timeout=5)
        assert rc is not None, "still running 5 s after a second signal"
        assert time.monotonic() - t0 < 2 * procs.time_scale()
        assert rc != 0, "a second signal cut a transfer short yet exit status 0"
        assert "again, exiting now" in run.stderr(), run.stderr()
        # the cut transfer is an error for its client
        assert dl.wait(timeout=30) != 0 or dl.received() == BIG, dl.stderr()
    finally:
        run.stop(check=False)
        dl.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_when_idle_exits_0(bed, sig):
    run = start(bed)
    os.kill(run.pid, sig)
    rc = run.wait_exit(timeout=10)
    assert rc == 0, "exit status %s:\n%s" % (rc, run.stderr())
    run.assert_clean()


# --- exit statuses of startup failures --------------------------------------------

def test_exit_2_usage(bed):
    run = start(bed, extra=["-o", "StrictHostKeyChecking=maybe"], wait=False)
    assert run.wait_exit() == 2, run.stderr()
    assert "StrictHostKeyChecking" in run.stderr()


def test_exit_3_no_ssh_server(bed):
    run = start(bed, ssh_port=procs.free_port(), wait=False)
    assert run.wait_exit() == 3, run.stderr()
    assert "cannot connect" in run.stderr(), run.stderr()


def test_exit_6_cannot_listen(bed):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        srv = bed.ftp_server(SERVER)
        run = ftpssh.Ftpssh(bed, [], extra=["-L", "127.0.0.1:%d:127.0.0.1:%d" % (port, srv.port)],
                            wait=False)
        assert run.wait_exit() == 6, run.stderr()
    run.assert_clean()


@pytest.mark.timeout(60)
def test_channel_closing_on_a_silent_server_is_freed(bed, own_sshd):
    """Stopping while the server is silent: sshd is stopped (SIGSTOP), so
    the CLOSE of the departed client's channel is never answered. ftpssh
    used to wait for it forever (SIGTERM did nothing); now it drops the
    connection after 3 s. And the channel still closing then is freed
    with the connection: libssh2 frees such a channel only once a read
    fails for good, and a read that said "try again" on the dead
    connection left libssh2_session_free() returning EAGAIN, the session
    and its channels leaked (the ASan build reports it at exit)."""
    run = start(bed, own_sshd)
    ftp = None
    try:
        ftp = clients.open_ftplib(run.target)
        ftp.voidcmd("NOOP")
        with procs.stopped(own_sshd.connection_pids()) as pids:
            assert pids, "no sshd connection process to stop"
            ftp.close()
            ftp = None
            # the session's channel is now closing and cannot finish
            time.sleep(0.5)
            assert run.alive(), run.describe()
            run.stop(check=True)  # with the server still silent
            assert ("the channels have not closed within 3 s (the SSH server does not "
                    "answer, or the link is slow); dropping the connection") in run.stderr(), \
                run.describe()
    finally:
        if ftp:
            ftp.close()
        run.stop(check=False)
