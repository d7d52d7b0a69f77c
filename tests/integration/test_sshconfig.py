"""Your ssh setup works as it is (issue 10, parts 1, 2 and 5): ftpssh asks
OpenSSH (`ssh -G`) where and how to connect, runs the SSH connection
through a jump host or a ProxyCommand, bounds connecting in time, and
takes ssh's everyday flags.

- an alias in ~/.ssh/config of an unprivileged test user (ssh reads the
  password database's home, so the test runs ftpssh with runuser), with
  Include and the tokens %h %p %r %d %u;
- ProxyJump through a second sshd acting as bastion (its DEBUG1 log shows
  the direct-tcpip open to the final sshd's port: the proof of the hop),
  the jump child killed (connection lost, reconnect, no zombie), a chain of
  two bastions, -J on the command line, ProxyCommand (netcat, or ssh -W);
- a silent server (accepts, never speaks) with ConnectTimeout=3 and a
  black-holed connect (full backlog): non-zero exit within a few seconds,
  the message naming the stage; a silent ProxyCommand that ignores
  SIGTERM: timed out, then killed (SIGKILL), nothing left behind;
- -f (the parent returns 0, the child serves), ssh://user@host:port with
  -N -T -C -4 and a warned option, no ssh binary (the command line alone),
  an unknown option name (ssh's message, exit 2).

Each run that connects does an FTP RETR of 1 MiB, sha256 checked. The
sshds are this module's own (Testbed.extra_sshd), never the shared one
except for the cheap ssh:// and no-ssh runs.
"""

import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness import clients, ftpssh, procs, testbed, tunnel

pytestmark = pytest.mark.ftpssh_only

SERVER = "pyftpdlib"
TEST_USER = "ftpsshcfg"
NET_EXIT = 3


# --- helpers -------------------------------------------------------------------

def run(bed, args, env=None, prefix=(), wait=True, cwd=None, name="sshcfg"):
    """ftpssh with -L to the FTP server and ARGS (no -p/-i/-o added: the
    ssh config decides); an ftpssh.Ftpssh (announcements, stop, ...)."""
    srv = bed.ftp_server(SERVER)
    r = ftpssh.Ftpssh.__new__(ftpssh.Ftpssh)
    r.bed, r.servers, r.ssh = bed, [srv], None
    r.name = ftpssh._next_name(name)
    r.argv = list(prefix) + ftpssh.wrap() + [ftpssh.binary(), "-L",
                                             "127.0.0.1:0:%s:%d" % (srv.host, srv.port)] + list(args)
    e = dict(os.environ)
    e["HOME"] = bed.home
    e.pop("SSH_AUTH_SOCK", None)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    e.update(env or {})
    r.env = e
    r.daemon = procs.Daemon(r.name, r.argv, bed.logdir, env=e, cwd=cwd or bed.home)
    r.pid = r.daemon.pid
    r.ports, r.targets, r.stopped = [], [], False
    r.ssh_port = None
    if wait:
        r.wait_ready()
    return r


def assert_retr(bed, target, what):
    ftp = clients.open_ftplib(target)
    try:
        h = hashlib.sha256()
        ftp.retrbinary("RETR data-1M", h.update, blocksize=1 << 16)
        assert h.hexdigest() == bed.data["1M"].sha256, "RETR data-1M %s: wrong sha256" % what
    finally:
        ftp.quit()


def direct_tcpip_since(sshd, offset):
    """(target host, port) of each direct-tcpip open sshd logged after
    byte OFFSET of its log (lines end in CR LF)."""
    text = sshd.log_text()[offset:].replace("\r", "")
    return re.findall(r"server_request_direct_tcpip: originator \S+ port \d+, "
                      r"target (\S+) port (\d+)$", text, re.M)


def ssh_config(bed, name, text):
    path = bed.path("sshcfg-" + name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def host_block(alias, sshd, extra=""):
    return ("Host %s\n  HostName 127.0.0.1\n  Port %d\n  User %s\n  IdentityFile %s\n"
            "  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n%s"
            % (alias, sshd.port, sshd.login, sshd.user_key, sshd.known_hosts, extra))


def children(pid):
    return [p for p in testbed.procs_below(pid)]


def zombies(pid):
    out = []
    for p in testbed.procs_below(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2:].split()[0] == "Z":
            out.append(p)
    return out


@pytest.fixture(scope="module")
def gw(bed):
    return bed.extra_sshd("sshcfg-gw")


@pytest.fixture(scope="module")
def b1(bed):
    return bed.extra_sshd("sshcfg-b1")


@pytest.fixture(scope="module")
def b2(bed):
    return bed.extra_sshd("sshcfg-b2")


@pytest.fixture(scope="module")
def jumpcfg(bed, gw, b1, b2):
    """An ssh config (given with -F, which ftpssh passes on to the jump
    ssh as OpenSSH does) naming the bastions and the ways through."""
    nc = shutil.which("nc")
    # ProxyCommand: with a host name that cannot resolve, only the
    # command can reach the gateway. Its known_hosts entry carries that name.
    kh_cmd = bed.path("sshcfg-kh-viacmd")
    with open(gw.host_key + ".pub") as f:
        kt, blob = f.read().split()[:2]
    with open(kh_cmd, "w") as f:
        f.write("[gw-via-cmd.invalid]:%d %s %s\n" % (gw.port, kt, blob))
    cmd = ("nc 127.0.0.1 %p" if nc else "ssh -F %s -W 127.0.0.1:%%p b1" % bed.path("sshcfg-jump"))
    text = (host_block("b1", b1) + host_block("b2", b2)
            + host_block("viab1", gw, "  ProxyJump b1\n")
            + host_block("viachain", gw, "  ProxyJump b1,b2\n")
            + "Host viacmd\n  HostName gw-via-cmd.invalid\n  Port %d\n  User %s\n"
              "  IdentityFile %s\n  UserKnownHostsFile %s\n  ProxyCommand %s\n"
            % (gw.port, gw.login, gw.user_key, kh_cmd, cmd))
    return ssh_config(bed, "jump", text)


# --- ~/.ssh/config of a real user -------------------------------------------------

@pytest.fixture(scope="module")
def cfg_user(bed, gw):
    """An unprivileged user whose ~/.ssh/config (mode 600, its own) names
    the gateway by an alias, through Include, with tokens; its key is
    authorized on the gateway sshd."""
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        r = subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-c", "ftpssh ssh-config test", TEST_USER],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        assert r.returncode in (0, 9), "useradd %s: %s" % (TEST_USER, r.stdout.decode())
        pw = pwd.getpwnam(TEST_USER)
    # no password, but not locked either: sshd refuses a locked account
    subprocess.run(["usermod", "-p", "*", TEST_USER], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    home = pw.pw_dir
    sshdir = os.path.join(home, ".ssh")
    shutil.rmtree(sshdir, ignore_errors=True)
    os.makedirs(os.path.join(sshdir, "conf.d"), mode=0o700)
    key = os.path.join(sshdir, "key-%s-127.0.0.1-%d" % (TEST_USER, gw.port))  # %u-%h-%p
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", TEST_USER, "-f", key],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=30)
    tunnel.authorize_key(gw, key)
    os.chmod(gw.authorized_keys, 0o644)  # sshd reads it as the user logging in
    with open(gw.host_key + ".pub") as f:
        kt, blob = f.read().split()[:2]
    files = {
        "config": "Include ~/.ssh/conf.d/*.conf\n",
        "conf.d/gw.conf": ("Host cfgalias\n  HostName 127.0.0.1\n  Port %d\n  User %s\n"
                           "  IdentityFile %%d/.ssh/key-%%u-%%h-%%p\n"
                           "  UserKnownHostsFile %%d/.ssh/known_hosts_%%r\n"
                           "  StrictHostKeyChecking yes\n" % (gw.port, TEST_USER)),
        "known_hosts_" + TEST_USER: "[127.0.0.1]:%d %s %s\n" % (gw.port, kt, blob),
    }
    for name, text in files.items():
        with open(os.path.join(sshdir, name), "w") as f:
            f.write(text)
    for root, dirs, names in os.walk(sshdir):
        for n in dirs + names:
            p = os.path.join(root, n)
            os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(p, 0o700 if os.path.isdir(p) else 0o600)
    os.chown(sshdir, pw.pw_uid, pw.pw_gid)
    os.chmod(sshdir, 0o700)
    return pw


def test_alias_from_users_ssh_config(bed, gw, cfg_user):
    """`ftpssh cfgalias` as the user: Include, HostName, Port, User,
    IdentityFile and UserKnownHostsFile with %d %u %h %p %r, all read by
    ssh from that user's home."""
    start = len(gw.log_text())
    r = run(bed, ["-v", "cfgalias"], prefix=["runuser", "-u", TEST_USER, "--"],
            env={"HOME": cfg_user.pw_dir, "USER": TEST_USER}, cwd=cfg_user.pw_dir, name="alias")
    try:
        err = r.stderr()
        key = os.path.join(cfg_user.pw_dir, ".ssh", "key-%s-127.0.0.1-%d" % (TEST_USER, gw.port))
        assert "%s@127.0.0.1 port %d" % (TEST_USER, gw.port) in err, err
        assert_retr(bed, r.target, "through the alias")
        assert "Accepted publickey for %s" % TEST_USER in gw.log_text()[start:], \
            "the gateway did not log the test user in with its key %s" % key
    finally:
        r.stop()


# --- jump hosts -----------------------------------------------------------------------

def test_proxyjump_through_bastion(bed, gw, b1, jumpcfg):
    """ProxyJump b1: b1's log shows the hop to the gateway's port; the jump
    ssh killed means a lost connection, a reconnect, and no zombie."""
    start = len(b1.log_text())
    r = run(bed, ["-F", jumpcfg, "viab1"], name="jump")
    try:
        assert_retr(bed, r.target, "via ProxyJump b1")
        assert ("127.0.0.1", str(gw.port)) in direct_tcpip_since(b1, start), \
            "bastion b1 logged no direct-tcpip to port %d:\n%s" % (gw.port, b1.log_text()[start:][-3000:])
        kids = [p for p in children(r.pid) if testbed._comm(p) == "ssh"]
        assert kids, "no ssh child under ftpssh"
        for p in kids:
            os.kill(p, signal.SIGKILL)
        tunnel.wait_for(lambda: r.stderr().count("is up") >= 2, 20, "reconnect after the jump ssh died",
                        run=r)
        assert "lost" in r.stderr(), r.stderr()
        assert_retr(bed, r.target, "after the reconnect")
        assert not zombies(r.pid), "zombie children of ftpssh: %s" % zombies(r.pid)
    finally:
        r.stop()


def test_proxyjump_chain(bed, gw, b1, b2, jumpcfg):
    """ProxyJump b1,b2: b1 opens to b2, b2 opens to the gateway."""
    s1, s2 = len(b1.log_text()), len(b2.log_text())
    r = run(bed, ["-F", jumpcfg, "viachain"], name="chain")
    try:
        assert_retr(bed, r.target, "via b1,b2")
        assert ("127.0.0.1", str(b2.port)) in direct_tcpip_since(b1, s1), b1.log_text()[s1:][-3000:]
        assert ("127.0.0.1", str(gw.port)) in direct_tcpip_since(b2, s2), b2.log_text()[s2:][-3000:]
    finally:
        r.stop()


def test_dash_j_on_command_line(bed, gw, b2, jumpcfg):
    start = len(b2.log_text())
    r = run(bed, ["-F", jumpcfg, "-J", "b2", "-p", str(gw.port), "-i", gw.user_key,
                  "-o", "UserKnownHostsFile=%s" % gw.known_hosts, "%s@127.0.0.1" % gw.login],
            name="dashj")
    try:
        assert_retr(bed, r.target, "via -J b2")
        assert ("127.0.0.1", str(gw.port)) in direct_tcpip_since(b2, start), b2.log_text()[start:][-3000:]
    finally:
        r.stop()


def test_proxycommand(bed, gw, jumpcfg):
    """HostName does not resolve: only the ProxyCommand reaches the
    gateway; the host key is checked under that name."""
    r = run(bed, ["-F", jumpcfg, "-v", "viacmd"], name="proxycmd")
    try:
        assert_retr(bed, r.target, "via ProxyCommand")
        assert "SSH connection through" in r.stderr(), r.stderr()
    finally:
        r.stop()


# --- ConnectTimeout ----------------------------------------------------------------------

def expect_timeout(bed, port, stage, seconds):
    t0 = time.monotonic()
    r = run(bed, ["-o", "ConnectTimeout=%d" % seconds, "-p", str(port), "-o", "BatchMode=yes",
                  "root@127.0.0.1"], wait=False, name="timeout")
    rc = r.wait_exit(timeout=seconds + 15)
    took = time.monotonic() - t0
    err = r.stderr()
    assert rc == NET_EXIT, "exit %s (want %d) after %.1fs:\n%s" % (rc, NET_EXIT, took, err)
    assert "timed out at the %s stage after %d s" % (stage, seconds) in err, err
    assert took >= seconds - 0.5, "gave up after %.1fs, before ConnectTimeout=%d" % (took, seconds)
    r.assert_clean()


def test_silent_server_times_out(bed):
    """A listener that accepts (the kernel does) and never speaks."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        expect_timeout(bed, s.getsockname()[1], "SSH banner", 3)


def test_black_holed_connect_times_out(bed):
    """A listener that never accepts, its backlog full: SYNs are dropped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        port = s.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                c = socket.socket()
                fillers.append(c)
                c.settimeout(0.5)
                try:
                    c.connect(("127.0.0.1", port))
                except socket.timeout:
                    break
            else:
                pytest.skip("could not fill the listen backlog")
            expect_timeout(bed, port, "connect", 2)
        finally:
            for c in fillers:
                c.close()


# --- habits: -f, ssh://, no ssh, unknown names ------------------------------------------

def test_background_f(bed):
    ssh = bed.sshd()
    r = run(bed, ["-f", "-p", str(ssh.port), "-i", ssh.user_key, "-o",
                  "UserKnownHostsFile=%s" % ssh.known_hosts, "%s@127.0.0.1" % ssh.login],
            wait=False, name="bg")
    child = None
    try:
        rc = r.daemon.proc.wait(timeout=20 * procs.time_scale())
        assert rc == 0, "the -f parent exited %s:\n%s" % (rc, r.stderr())
        bg = re.compile(r"running in the background as pid (\d+)")
        tunnel.wait_for(lambda: bg.search(r.stderr()), 10, "the background line")
        m = bg.search(r.stderr())
        child = int(m.group(1))
        assert child != r.pid and os.path.exists("/proc/%d" % child)
        r.wait_ready()
        assert_retr(bed, r.target, "through the -f child")
    finally:
        if child:
            os.kill(child, signal.SIGTERM)
            tunnel.wait_for(lambda: not os.path.exists("/proc/%d" % child)
                            or open("/proc/%d/stat" % child).read().split(") ")[1][0] == "Z",
                            10, "the -f child to exit")
        r.stopped = True
        r.daemon.stop()
    r.assert_clean()


def test_ssh_uri_and_habits(bed):
    """ssh://user@host:port with -N -T -C -4 and ExitOnForwardFailure;
    ControlMaster is warned about by name."""
    ssh = bed.sshd()
    r = run(bed, ["-N", "-T", "-C", "-4", "-i", ssh.user_key, "-o",
                  "UserKnownHostsFile=%s" % ssh.known_hosts, "-o", "ExitOnForwardFailure=yes",
                  "-o", "ControlMaster=auto", "ssh://%s@127.0.0.1:%d" % (ssh.login, ssh.port)],
            name="uri")
    try:
        err = r.stderr()
        assert re.search(r"warning: ssh options ftpssh does not honour \(ignored\): .*ControlMaster", err), err
        assert_retr(bed, r.target, "via ssh://")
    finally:
        r.stop()


def test_without_ssh_binary(bed):
    """FTPSSH_SSH naming nothing: the command line alone, said at -v."""
    ssh = bed.sshd()
    r = run(bed, ["-v", "-p", str(ssh.port), "-i", ssh.user_key, "-o",
                  "UserKnownHostsFile=%s" % ssh.known_hosts, "%s@127.0.0.1" % ssh.login],
            env={"FTPSSH_SSH": bed.path("no-such-ssh")}, name="nossh")
    try:
        assert "no OpenSSH ssh at %s" % bed.path("no-such-ssh") in r.stderr(), r.stderr()
        assert_retr(bed, r.target, "without ssh -G")
    finally:
        r.stop()


def test_unknown_option_name_exit_2(bed):
    r = run(bed, ["-o", "NoSuchOption=1", "root@127.0.0.1"], wait=False, name="unknown")
    rc = r.wait_exit()
    err = r.stderr()
    assert rc == 2, "exit %s:\n%s" % (rc, err)
    assert "Bad configuration option: nosuchoption" in err, err
    assert not r.announcements()


def test_silent_proxy_command_is_killed(bed):
    """A ProxyCommand that never speaks and ignores SIGTERM: the connect
    times out (stage named, through the proxy), and closing escalates to
    SIGKILL; no child is left behind."""
    marker = bed.path("sshcfg-stubborn.pid")
    cfg = ssh_config(bed, "stubborn", "Host stubborn\n  HostName 127.0.0.1\n  ConnectTimeout 2\n"
                     "  ProxyCommand sh -c \"trap '' TERM; echo $$ > %s; exec sleep 60\"\n" % marker)
    t0 = time.monotonic()
    r = run(bed, ["-F", cfg, "stubborn"], wait=False, name="stubborn")
    rc = r.wait_exit(timeout=20)
    took = time.monotonic() - t0
    err = r.stderr()
    assert rc == NET_EXIT, "exit %s after %.1fs:\n%s" % (rc, took, err)
    assert "timed out at the SSH banner stage after 2 s" in err and "through the proxy command" in err, err
    with open(marker) as f:
        pid = int(f.read())
    deadline = time.monotonic() + 10 * procs.time_scale()
    while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().split(") ")[1][0] == "Z":
                break
        time.sleep(0.1)
    alive = os.path.exists("/proc/%d" % pid) and open("/proc/%d/stat" % pid).read().split(") ")[1][0] != "Z"
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the ProxyCommand (pid %d) outlived ftpssh" % pid
    r.assert_clean()
