"""The loopback sandbox: an OpenSSH sshd and three FTP servers.

Everything listens on 127.0.0.1 on free high ports picked at run time;
all state (keys, configs, logs, FTP roots, test files) lives in one
temporary directory. Nothing here touches a system service or port 21.

    bed = Testbed()
    ssh = bed.sshd()                 # SshServer: port, login, keys
    srv = bed.ftp_server("vsftpd")   # FtpServer: port, root, banner
    ...
    bed.close()                      # stops every daemon, removes the dir

The FTP servers keep their DEFAULT passive settings (no fixed port range,
no masquerade address): ftpssh must cope with whatever data port the
server picks.
"""

import getpass
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile

from . import procs

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

FTP_USER = os.environ.get("FTPSSH_TEST_USER", "ftpsshtest")
FTP_PASSWORD = "ftpsshTest42"  # letters and digits only: safe in URLs

SERVER_KINDS = ("vsftpd", "proftpd", "pyftpdlib")

# label -> size in bytes; files "data-LABEL" live on the servers (RETR
# sources), files "up-LABEL" on the client side (STOR sources, different
# content so a mixed-up stream cannot pass).
SIZES = {"0": 0, "1": 1, "1M": 1 << 20, "64M": 64 << 20}
# Other tests use these two whatever the matrix is.
ALWAYS = ("1", "1M")


def matrix_sizes():
    """Sizes the transfer matrix runs: all of SIZES, or the comma list in
    FTPSSH_TEST_SIZES (e.g. "0,1,1M" to leave out 64 MiB under valgrind)."""
    env = os.environ.get("FTPSSH_TEST_SIZES")
    if not env:
        return list(SIZES)
    chosen = [x.strip() for x in env.split(",") if x.strip()]
    bad = [x for x in chosen if x not in SIZES]
    if bad:
        raise RuntimeError("FTPSSH_TEST_SIZES: unknown sizes %s (known: %s)" % (bad, ",".join(SIZES)))
    return chosen

# Banners each server greets with: tests use them to tell servers apart.
BANNER = {
    "vsftpd": "vsFTPd",
    "proftpd": "ProFTPD",
    "pyftpdlib": "pyftpdlib",
}


DIRECT_TCPIP = re.compile(r"server_request_direct_tcpip: originator \S+ port \d+, target \S+ port (\d+)")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _run(argv, timeout=60, **kw):
    r = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(map(str, argv)), r.returncode,
                                                     r.stdout.decode("utf-8", "replace")))
    return r.stdout.decode("utf-8", "replace")


def _write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class DataFile:
    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.size = os.path.getsize(path)
        self.sha256 = sha256_file(path)


class SshServer:
    """An OpenSSH sshd on its own free port. The default instance (name
    "ssh", from Testbed.sshd()) takes only the generated ed25519 user key;
    Testbed.extra_sshd() makes more, e.g. with password_auth=True (the FTP
    test user's password) or kbdint=True (keyboard-interactive through
    PAM), for tests that must not disturb the shared one."""

    def __init__(self, bed, name="ssh", password_auth=False, kbdint=False, extra_config=(),
                 log_level="DEBUG1", pam_service=None,
                 host_key_types=("ed25519",)):
        self.bed = bed
        self.name = name
        d = bed.path(name)
        os.makedirs(d, exist_ok=True)
        self.dir = d
        self.port = procs.free_port()
        # Tests run as root (sshd can only log in its own user otherwise).
        self.login = getpass.getuser()
        # host_key_types: the host keys sshd offers ("ed25519", "ecdsa");
        # host_key is the first, host_keys maps each type to its file.
        self.host_keys = {t: os.path.join(d, "ssh_host_%s_key" % t) for t in host_key_types}
        self.host_key = self.host_keys[host_key_types[0]]
        self.user_key = os.path.join(d, "id_ed25519")
        self.other_key = os.path.join(d, "id_ed25519_unauthorized")
        for t, key in self.host_keys.items():
            _run(["ssh-keygen", "-q", "-t", t, "-N", "", "-C", "ftpssh-test-host", "-f", key])
        for key, comment in ((self.user_key, "ftpssh-test-user"),
                             (self.other_key, "ftpssh-test-stranger")):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key])
        self.authorized_keys = os.path.join(d, "authorized_keys")
        shutil.copyfile(self.user_key + ".pub", self.authorized_keys)
        os.chmod(self.authorized_keys, 0o600)

        with open(self.host_key + ".pub") as f:
            keytype, blob = f.read().split()[:2]
        self.host_key_entry = "%s %s" % (keytype, blob)
        self.known_hosts = self.write_known_hosts("known_hosts", self.host_key_entry)

        self.log_path = os.path.join(bed.logdir, "sshd.log" if name == "ssh" else name + "-sshd.log")
        self.config = os.path.join(d, "sshd_config")
        _write(self.config, "\n".join([
            "Port %d" % self.port,
            "ListenAddress 127.0.0.1",
        ] + ["HostKey %s" % k for k in self.host_keys.values()] + [
            "PidFile %s" % os.path.join(d, "sshd.pid"),
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication %s" % ("yes" if password_auth else "no"),
            "KbdInteractiveAuthentication %s" % ("yes" if kbdint else "no"),
            # Keyboard-interactive needs PAM on Linux; passwords do not.
            "UsePAM %s" % ("yes" if kbdint else "no"),
            "StrictModes no",
            "AllowTcpForwarding yes",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "PrintMotd no",
            "MaxStartups 100",
            "LogLevel %s" % log_level,  # direct-tcpip targets are logged at debug1
            "Subsystem sftp internal-sftp",  # the SFTP front end (issue 14), bench row 9
        ] + list(extra_config) + [""]))
        # Compiled-in privilege separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        # sshd names its PAM service after argv[0]: pam_service runs it
        # through a symlink of that name (the test provides
        # /etc/pam.d/<pam_service>).
        binary = "/usr/sbin/sshd"
        if pam_service:
            binary = os.path.join(d, pam_service)
            if not os.path.lexists(binary):
                os.symlink("/usr/sbin/sshd", binary)
        _run([binary, "-t", "-f", self.config])
        self.argv = [binary, "-D", "-f", self.config, "-E", self.log_path]
        self._starts = 0
        self.start()

    def start(self):
        """Start the listener (again, after stop(): same config and port)."""
        self._starts += 1
        label = "sshd" if self.name == "ssh" else self.name + "-sshd"
        if self._starts > 1:
            label += "-%d" % self._starts
        self.daemon = procs.Daemon(label, self.argv, self.bed.logdir)
        self.daemon.wait_port(self.port)

    def restart(self):
        self.stop()
        self.start()

    def connection_pids(self):
        """PIDs of every process below the listener: sshd's per-connection
        children (they run in sessions of their own, so stopping the
        listener's process group leaves them alive), and those a stopped
        listener left behind."""
        pids = procs_below(self.daemon.pid) if self.daemon.alive() else []
        for pid in getattr(self, "_orphans", ()):
            if pid not in pids and _comm(pid) == "sshd":
                pids.append(pid)
        return pids

    def kill_connections(self, sig=signal.SIGKILL):
        """Signal every per-connection sshd process (the TCP connections
        of its clients die with them); the list of PIDs signalled."""
        pids = self.connection_pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def write_known_hosts(self, name, *entries):
        """A known_hosts file for this server with the given key entries
        ("ssh-ed25519 AAAA..."); no entries makes an empty file."""
        path = os.path.join(self.dir, name)
        _write(path, "".join("[127.0.0.1]:%d %s\n" % (self.port, e) for e in entries), 0o600)
        return path

    def direct_tcpip_targets(self):
        """Target ports of every direct-tcpip channel sshd opened so far,
        in order (sshd logs them at LogLevel DEBUG1)."""
        return [int(m) for m in DIRECT_TCPIP.findall(self.log_text())]

    def log_text(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.name != "ssh" and self.daemon.alive():
            # remember the connections the listener leaves behind
            self._orphans = self.connection_pids()
        self.daemon.stop()


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def procs_below(root):
    """PIDs of every descendant of process ROOT (from /proc), deepest last."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after it
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(0), ()):
            found.append(child)
            todo.append(child)
    return found


class FtpServer:
    def __init__(self, bed, kind):
        self.bed = bed
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = procs.free_port()
        self.root = bed.path("ftp", kind)
        self.banner = BANNER[kind]
        os.makedirs(self.root)
        uid, gid = bed.ftp_uid_gid()
        os.chown(self.root, uid, gid)
        os.chmod(self.root, 0o755)
        for label, df in bed.data.items():
            # Read-only and root-owned: a stray STOR cannot change them.
            os.link(df.path, os.path.join(self.root, df.name))
        getattr(self, "_start_" + kind)()
        self.daemon.wait_port(self.port)

    def __repr__(self):
        return "<%s on 127.0.0.1:%d>" % (self.kind, self.port)

    def file(self, name):
        return os.path.join(self.root, name)

    def _start_vsftpd(self):
        d = self.bed.path("vsftpd")
        empty = os.path.join(d, "empty")
        os.makedirs(empty, mode=0o755)
        conf = os.path.join(d, "vsftpd.conf")
        _write(conf, "\n".join([
            "listen=YES",
            "listen_ipv6=NO",
            "listen_address=127.0.0.1",
            "listen_port=%d" % self.port,
            "background=NO",
            "seccomp_sandbox=NO",
            "anonymous_enable=NO",
            "local_enable=YES",
            "write_enable=YES",
            "local_umask=022",
            "pam_service_name=vsftpd",
            "secure_chroot_dir=%s" % empty,
            "chroot_local_user=NO",
            "local_root=%s" % self.root,
            "userlist_enable=NO",
            "max_per_ip=0",
            "max_clients=0",
            "xferlog_enable=YES",
            "xferlog_std_format=NO",
            "log_ftp_protocol=YES",
            "vsftpd_log_file=%s" % os.path.join(self.bed.logdir, "vsftpd.log"),
            "",
        ]), 0o600)
        self.daemon = procs.Daemon("vsftpd", ["/usr/sbin/vsftpd", conf], self.bed.logdir)

    def _start_proftpd(self):
        binary = self.bed.proftpd_binary()
        d = self.bed.path("proftpd")
        os.makedirs(d, mode=0o755)
        conf = os.path.join(d, "proftpd.conf")
        _write(conf, "\n".join([
            'ServerName "ftpssh test proftpd"',
            "ServerType standalone",
            "DefaultServer on",
            "Port %d" % self.port,
            "DefaultAddress 127.0.0.1",
            "SocketBindTight on",
            "UseIPv6 off",
            "User nobody",
            "Group nogroup",
            "PidFile %s" % os.path.join(d, "proftpd.pid"),
            "ScoreboardFile %s" % os.path.join(d, "proftpd.scoreboard"),
            "DelayTable none",
            "WtmpLog off",
            "RequireValidShell off",
            "AuthOrder mod_auth_unix.c",
            "UseReverseDNS off",
            "MaxInstances 200",
            "Umask 022",
            "DefaultChdir %s" % self.root,
            "SystemLog %s" % os.path.join(self.bed.logdir, "proftpd.log"),
            "TransferLog %s" % os.path.join(self.bed.logdir, "proftpd.xferlog"),
            "<Directory />",
            "  AllowOverwrite on",
            "</Directory>",
            "",
        ]), 0o644)
        _run([binary, "-t", "-c", conf])
        self.daemon = procs.Daemon("proftpd", [binary, "-n", "-c", conf], self.bed.logdir)

    def _start_pyftpdlib(self):
        self.daemon = procs.Daemon("pyftpdlib", [
            sys.executable, os.path.join(HERE, "pyftpd_server.py"),
            "--port", self.port, "--root", self.root,
            "--user", FTP_USER, "--password", FTP_PASSWORD,
            "--log", os.path.join(self.bed.logdir, "pyftpdlib.log")], self.bed.logdir)

    def stop(self):
        self.daemon.stop()


class Testbed:
    def __init__(self, sizes=None, keep=None):
        if os.geteuid() != 0:
            raise RuntimeError("the ftpssh test bed runs as root (it creates the FTP "
                               "test user and runs sshd, vsftpd, proftpd)")
        self.keep = os.environ.get("FTPSSH_TEST_KEEP") == "1" if keep is None else keep
        self.dir = tempfile.mkdtemp(prefix="ftpssh-test-", dir=os.environ.get("FTPSSH_TEST_TMPDIR"))
        # The FTP user's server processes must reach the FTP roots inside.
        os.chmod(self.dir, 0o755)
        self.logdir = self.path("logs")
        os.makedirs(self.logdir)
        self.clientdir = self.path("client")
        os.makedirs(self.clientdir)
        # HOME for every client and for ftpssh: no ~/.netrc, ~/.wgetrc,
        # lftp history or known_hosts of the machine's user gets involved.
        self.home = self.path("home")
        os.makedirs(self.home)
        self._ssh = None
        self._extra_ssh = {}
        self._servers = {}
        self._proftpd = None
        self._uid_gid = None
        self.ensure_ftp_user()
        self.data = {}
        self.uploads = {}
        if sizes is None:
            sizes = {k: SIZES[k] for k in SIZES if k in matrix_sizes() or k in ALWAYS}
        self._make_data(sizes)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    # --- the FTP test user --------------------------------------------
    def ensure_ftp_user(self):
        try:
            pwd.getpwnam(FTP_USER)
        except KeyError:
            r = subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-c", "ftpssh test user", FTP_USER],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            if r.returncode not in (0, 9):  # 9: created meanwhile by someone else
                raise RuntimeError("useradd %s failed: %s" % (FTP_USER, r.stdout.decode()))
        pw = pwd.getpwnam(FTP_USER)
        if pw.pw_shell != "/bin/bash":  # vsftpd's PAM stack wants a real shell
            subprocess.run(["usermod", "-s", "/bin/bash", FTP_USER], check=True, timeout=30,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.makedirs(pw.pw_dir, exist_ok=True)
        subprocess.run(["chpasswd"], input=("%s:%s\n" % (FTP_USER, FTP_PASSWORD)).encode(),
                       check=True, timeout=30, stdout=subprocess.DEVNULL)
        self._uid_gid = (pw.pw_uid, pw.pw_gid)

    def ftp_uid_gid(self):
        return self._uid_gid

    # --- test files ------------------------------------------------------
    def _make_data(self, sizes):
        src = self.path("src")
        os.makedirs(src)
        for label, size in sizes.items():
            for prefix, table in (("data-", self.data), ("up-", self.uploads)):
                p = os.path.join(src, prefix + label)
                with open(p, "wb") as f:
                    left = size
                    while left:
                        n = min(left, 1 << 20)
                        f.write(os.urandom(n))
                        left -= n
                os.chmod(p, 0o444)
                table[label] = DataFile(prefix + label, p)

    # --- daemons ---------------------------------------------------------
    def sshd(self):
        if self._ssh is None:
            self._ssh = SshServer(self)
        return self._ssh

    def extra_sshd(self, name, **kw):
        """Another sshd (see SshServer), made once per name and stopped
        with the test bed."""
        if name not in self._extra_ssh:
            self._extra_ssh[name] = SshServer(self, name=name, **kw)
        return self._extra_ssh[name]

    def ftp_server(self, kind):
        if kind not in self._servers:
            self._servers[kind] = FtpServer(self, kind)
        return self._servers[kind]

    def proftpd_binary(self):
        if self._proftpd is None:
            cache = os.environ.get("FTPSSH_PROFTPD_CACHE", os.path.join(REPO, "tests", ".cache", "proftpd"))
            out = _run([os.path.join(REPO, "scripts", "testbed-proftpd"), cache], timeout=600)
            self._proftpd = os.path.abspath(os.path.join(REPO, out.strip().splitlines()[-1]))
        return self._proftpd

    def close(self, keep_logs=False):
        """Stop every daemon and remove the state directory. With
        keep_logs (or FTPSSH_TEST_KEEP=1) the directory stays for a look
        at the logs and configs; keep_logs alone drops the test files."""
        for srv in list(self._servers.values()):
            srv.stop()
        self._servers.clear()
        if self._ssh is not None:
            self._ssh.stop()
            self._ssh = None
        for ssh in self._extra_ssh.values():
            ssh.kill_connections()
            ssh.stop()
        self._extra_ssh.clear()
        if self.keep:
            return
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        for sub in ("src", "client"):
            shutil.rmtree(self.path(sub), ignore_errors=True)
        ftp = self.path("ftp")
        for root, _, files in os.walk(ftp):
            for f in files:
                try:
                    os.unlink(os.path.join(root, f))
                except OSError:
                    pass
