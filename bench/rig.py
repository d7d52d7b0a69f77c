"""The benchmark rig: the test bed's sshd and vsftpd, plus what only the
benchmark needs (the reference vsftpd with its fixed passive range, the
classic `ssh -N -L` recipe, the delay relay, ftpssh under test) and the
measuring instruments (curl runs, /proc counters, the libssh2 reader).

Everything listens on 127.0.0.0/8. Every daemon is started through the
harness's procs.Daemon, so it is stopped at the end whatever happens.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time

from harness import procs, relay
from harness.ftpssh import Ftpssh
from harness.testbed import FTP_PASSWORD, FTP_USER, Testbed

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MIB = 1 << 20
GIB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


# --- /proc instruments ----------------------------------------------------

def cpu_seconds(pid):
    """user+sys CPU seconds of PID so far (from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime, stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def io_counters(pid):
    """rchar, wchar of PID: every byte it read or wrote, sockets included."""
    return procs.io_count(pid, "rchar"), procs.io_count(pid, "wchar")


def tree_cpu_seconds(root_pid):
    """user+sys CPU seconds of ROOT_PID's descendants (not itself): for the
    sshd listener, the per-connection processes that do the crypto."""
    parent, cpu = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(fields[1])
        cpu[int(d)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total = 0.0
    for pid in cpu:
        p = parent.get(pid)
        while p and p != root_pid:
            p = parent.get(p)
        if p == root_pid:
            total += cpu[pid]
    return total


def listening(host, port):
    """Whether something listens on HOST:PORT (IPv4), from /proc/net/tcp:
    no probe connection, so the ssh forwards open no channel for it."""
    want = "%08X:%04X" % (int.from_bytes(bytes(int(x) for x in host.split(".")), "little"), port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# --- curl ------------------------------------------------------------------

CURL_W = "%{size_download} %{size_upload} %{time_total} %{time_pretransfer}\n"


def curl_argv(host, port, path, extra=()):
    return ["curl", "-sS", "--ftp-pasv", "--connect-timeout", "10",
            "-u", "%s:%s" % (FTP_USER, FTP_PASSWORD), "-w", CURL_W] + list(extra) + [
        "ftp://%s:%d/%s" % (host, port, path)]


def parse_curl(out, pretransfer=False):
    """(downloaded, uploaded, total seconds[, seconds before the data
    transfer began: login, TYPE, EPSV, RETR/STOR])."""
    line = out.strip().splitlines()[-1] if out.strip() else ""
    parts = line.split()
    if len(parts) < 4:
        return (0, 0, 0.0, 0.0) if pretransfer else (0, 0, 0.0)
    r = (int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]))
    return r if pretransfer else r[:3]


def time_limit(size, floor_rate=2e6):
    """A generous bound for one transfer: at least 60 s, or SIZE at 2 MB/s."""
    return int(60 + size / floor_rate)


class Endpoint:
    """Where curl and ftplib connect for one way of reaching the vsftpd:
    host:port, plus the process whose CPU/IO/RSS we watch (None: direct)."""

    def __init__(self, name, host, port, pid=None, server_root=None, sshd_pid=None):
        self.name = name
        self.host = host
        self.port = port
        self.pid = pid
        self.server_root = server_root
        self.sshd_pid = sshd_pid

    def retr(self, remote, size, extra=(), max_time=None, check=True):
        """curl RETR to /dev/null. Returns a result dict."""
        argv = curl_argv(self.host, self.port, remote,
                         ["-o", "/dev/null", "--max-time", str(max_time or time_limit(size))]
                         + list(extra))
        return self._run(argv, size, "RETR", check)

    def stor(self, local, size, remote, check=True):
        argv = curl_argv(self.host, self.port, remote,
                         ["-T", local, "--max-time", str(time_limit(size))])
        r = self._run(argv, size, "STOR", check)
        path = os.path.join(self.server_root, remote)
        try:
            stored = os.path.getsize(path)
        except OSError:
            stored = -1
        try:
            os.unlink(path)
        except OSError:
            pass
        if check and stored != size:
            raise BenchError("%s STOR %s: server holds %d of %d bytes" % (self.name, remote, stored, size))
        return r

    def _run(self, argv, size, what, check):
        before = self.sample()
        t0 = time.monotonic()
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=int(argv[argv.index("--max-time") + 1]) + 30)
        wall = time.monotonic() - t0
        after = self.sample()
        down, up, total, pre = parse_curl(p.stdout.decode("utf-8", "replace"), pretransfer=True)
        moved = down if what == "RETR" else up
        if check and (p.returncode != 0 or moved != size):
            raise BenchError("%s %s via %s: curl exit %d, %d of %d bytes\n%s" % (
                what, argv[-1], self.name, p.returncode, moved, size,
                p.stderr.decode("utf-8", "replace")[-2000:]))
        r = {"bytes": moved, "seconds": total or wall, "wall": wall, "rc": p.returncode}
        r["mbps"] = moved / r["seconds"] / 1e6 if r["seconds"] > 0 else 0.0
        # Throughput of the data phase alone (after login and RETR/STOR).
        r["data_mbps"] = moved / (total - pre) / 1e6 if total > pre > 0 else None
        if before and after:
            r["cpu"] = after["cpu"] - before["cpu"]
            r["rchar"] = after["rchar"] - before["rchar"]
            r["wchar"] = after["wchar"] - before["wchar"]
            if self.sshd_pid:
                r["sshd_cpu"] = after["sshd_cpu"] - before["sshd_cpu"]
        return r

    def sample(self):
        if not self.pid:
            return None
        rchar, wchar = io_counters(self.pid)
        s = {"cpu": cpu_seconds(self.pid), "rchar": rchar, "wchar": wchar}
        if self.sshd_pid:
            # Every sshd connection process: the idle ones add nothing.
            s["sshd_cpu"] = tree_cpu_seconds(self.sshd_pid)
        return s


def algo_args(cfg, algos, cipher_opt, mac_opt):
    """Command-line words for a cipher/MAC choice: algos None is
    BENCH_CIPHER/BENCH_MAC, () the program's own defaults, (c, m) with m
    None for an AEAD cipher. The last word of *_opt gets the name glued
    on when it ends in '='."""
    cipher, mac = (cfg.cipher, cfg.mac) if algos is None else (tuple(algos) + (None, None))[:2]

    def opt(words, name):
        if not name:
            return []
        if words[-1].endswith("="):
            return words[:-1] + [words[-1] + name]
        return words + [name]
    return opt(cipher_opt, cipher) + opt(mac_opt, mac)


# --- the rig -----------------------------------------------------------------

class Rig:
    def __init__(self, cfg, log):
        self.cfg = cfg
        self.log = log
        self.bed = Testbed(sizes={"1": 1})
        self.ssh = self.bed.sshd()
        self.srv = self.bed.ftp_server("vsftpd")
        self.root = self.srv.root
        self.files = {}
        # ftpssh under test: a private copy, so that a rebuild by someone
        # else in the middle of the run cannot change what is measured.
        src = os.environ.get("BENCH_FTPSSH_BIN", os.path.join(REPO, "build", "ftpssh"))
        if not os.access(src, os.X_OK):
            raise BenchError("%s not built (make all)" % src)
        self.ftpssh_bin = self.bed.path("ftpssh-under-bench")
        shutil.copy2(src, self.ftpssh_bin)
        with open(self.ftpssh_bin, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        self.binary_id = "%s, built %s, sha256 %s" % (
            src, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(src))), digest)
        os.environ["FTPSSH_BIN"] = self.ftpssh_bin
        os.environ.pop("FTPSSH_WRAP", None)
        os.environ.pop("FTPSSH_TEST_VERBOSE", None)
        self.reader_bin = os.environ.get("BENCH_READER_BIN",
                                         os.path.join(REPO, "build", "bench", "ssh_reader"))
        self.known_hosts = os.path.join(self.ssh.dir, "known_hosts_bench")
        self._kh_ports = set()
        self.add_known_port(self.ssh.port)
        self.ref_srv_port = None
        self._start_ref_vsftpd()

    # --- files ----------------------------------------------------------
    def data_file(self, size):
        """A file of SIZE bytes in the FTP root (shared by both vsftpds);
        returns (remote name, local path for STOR)."""
        if size in self.files:
            return self.files[size]
        name = "bench-%d" % size
        src = self.bed.path("src", name)
        block = bytearray(os.urandom(MIB))
        with open(src, "wb") as f:
            left, i = size, 0
            while left:
                block[:8] = i.to_bytes(8, "big")
                n = min(left, MIB)
                f.write(block[:n])
                left -= n
                i += 1
        os.chmod(src, 0o444)
        os.link(src, os.path.join(self.root, name))
        self.files[size] = (name, src)
        return self.files[size]

    def upload_name(self, tag):
        self._up = getattr(self, "_up", 0) + 1
        return "bench-up-%s-%d" % (tag, self._up)

    # --- known hosts ------------------------------------------------------
    def add_known_port(self, port):
        self._kh_ports.add(port)
        with open(self.known_hosts, "w") as f:
            for p in sorted(self._kh_ports):
                f.write("[127.0.0.1]:%d %s\n" % (p, self.ssh.host_key_entry))
        os.chmod(self.known_hosts, 0o600)

    # --- reference vsftpd: fixed passive range, masquerade address ---------
    def _start_ref_vsftpd(self):
        c = self.cfg
        d = self.bed.path("vsftpd-ref")
        empty = os.path.join(d, "empty")
        os.makedirs(empty, mode=0o755)
        self.ref_srv_port = procs.free_port()
        conf = os.path.join(d, "vsftpd.conf")
        # The test bed's vsftpd settings, plus the classic recipe's three.
        lines = [
            "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1",
            "listen_port=%d" % self.ref_srv_port, "background=NO", "seccomp_sandbox=NO",
            "anonymous_enable=NO", "local_enable=YES", "write_enable=YES", "local_umask=022",
            "pam_service_name=vsftpd", "secure_chroot_dir=%s" % empty,
            "chroot_local_user=NO", "local_root=%s" % self.root, "userlist_enable=NO",
            "max_per_ip=0", "max_clients=0",
            "xferlog_enable=YES", "xferlog_std_format=NO", "log_ftp_protocol=YES",
            "vsftpd_log_file=%s" % os.path.join(self.bed.logdir, "vsftpd-ref.log"),
            "pasv_enable=YES",
            "pasv_min_port=%d" % c.pasv_ports[0],
            "pasv_max_port=%d" % c.pasv_ports[-1],
            "pasv_address=%s" % c.ref_host,
            "",
        ]
        with open(conf, "w") as f:
            f.write("\n".join(lines))
        os.chmod(conf, 0o600)
        self.ref_vsftpd = procs.Daemon("vsftpd-ref", ["/usr/sbin/vsftpd", conf], self.bed.logdir)
        self.ref_vsftpd.wait_port(self.ref_srv_port)

    # --- forwarders --------------------------------------------------------
    def direct(self):
        return Endpoint("direct", "127.0.0.1", self.srv.port, server_root=self.root)

    def start_ref(self, ssh_port=None, tag="ssh-L", algos=None, server_port=None):
        """The classic recipe: ssh -N -L for the control port and each
        passive port, all bound on ref_host, to the reference vsftpd.
        algos: (cipher, MAC or None) instead of BENCH_CIPHER/BENCH_MAC;
        () for ssh's own defaults. server_port: the control forward's
        target on 127.0.0.1 instead of the reference vsftpd."""
        c = self.cfg
        server_port = server_port or self.ref_srv_port
        ssh_port = ssh_port or self.ssh.port
        for p in c.pasv_ports:
            if listening(c.ref_host, p):
                raise BenchError("%s:%d is taken: another benchmark running? (BENCH_PASV_BASE)"
                                 % (c.ref_host, p))
        ctrl = procs.free_port()
        argv = ["ssh", "-F", "/dev/null", "-N", "-o", "BatchMode=yes",
                "-o", "ExitOnForwardFailure=yes",
                "-o", "UserKnownHostsFile=%s" % self.known_hosts,
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                ] + algo_args(c, algos, ["-c"], ["-m"]) + [
                "-i", self.ssh.user_key, "-p", str(ssh_port),
                "-L", "%s:%d:127.0.0.1:%d" % (c.ref_host, ctrl, server_port)]
        for p in c.pasv_ports:
            argv += ["-L", "%s:%d:127.0.0.1:%d" % (c.ref_host, p, p)]
        argv.append("%s@127.0.0.1" % self.ssh.login)
        env = dict(os.environ, HOME=self.bed.home)
        env.pop("SSH_AUTH_SOCK", None)
        d = procs.Daemon(tag, argv, self.bed.logdir, env=env)
        deadline = time.monotonic() + 20
        while not all(listening(c.ref_host, p) for p in [ctrl] + c.pasv_ports):
            if not d.alive():
                raise BenchError("ssh -L exited:\n" + d.describe())
            if time.monotonic() > deadline:
                raise BenchError("ssh -L forwards not listening after 20 s:\n" + d.describe())
            time.sleep(0.05)
        ep = Endpoint("ssh -L", c.ref_host, ctrl, pid=d.pid, server_root=self.root,
                      sshd_pid=self.ssh.daemon.pid)
        ep.daemon = d
        return ep

    def start_ftpssh(self, ssh_port=None, args=None, algos=None, server=None):
        """algos as for start_ref; () for ftpssh's own defaults. server:
        what the -L reaches (an object with kind, host, port) instead of
        the test bed's vsftpd."""
        c = self.cfg
        # One uid drives every session of the bench: lift the per-user and
        # global session caps (and the descriptor limit they are fitted
        # to), which are not what is measured here.
        extra = algo_args(c, algos, ["-o", "Ciphers="], ["-o", "MACs="]) + [
                 "--max-sessions=4096", "--max-sessions-per-user=4096"] + (
            c.ftpssh_args if args is None else args)
        fx = Ftpssh(self.bed, [server or self.srv], known_hosts=self.known_hosts,
                    ssh_port=ssh_port or self.ssh.port, extra=extra,
                    prefix=["prlimit", "--nofile=16384", "--"])
        ep = Endpoint("ftpssh", "127.0.0.1", fx.target.port, pid=fx.pid, server_root=self.root,
                      sshd_pid=self.ssh.daemon.pid)
        ep.daemon = fx
        return ep

    def start_ftpssh_sftp(self, ssh_port=None):
        """ftpssh as the FTP server itself (issue 14): -L 0:sftp:ROOT, the
        files through the sshd's internal-sftp, in the same root."""
        c = self.cfg

        class _Sftp:
            kind, host, port = "sftp", "sftp", 0
        fx = Ftpssh(self.bed, [], known_hosts=self.known_hosts, ssh_port=ssh_port or self.ssh.port,
                    wait=False, extra=["-o", "Ciphers=%s" % c.cipher, "-o", "MACs=%s" % c.mac,
                                       "-L", "127.0.0.1:0:sftp:" + self.root])
        fx.servers = [_Sftp()]
        fx.wait_ready()
        ep = Endpoint("ftpssh sftp", "127.0.0.1", fx.ports[0], pid=fx.pid, server_root=self.root,
                      sshd_pid=self.ssh.daemon.pid)
        ep.daemon = fx
        return ep

    def sftp_cmd(self, ssh_port, batch, size, what):
        """OpenSSH's sftp with the bench's cipher and MAC running one batch
        command; the result dict (wall time, login included)."""
        c = self.cfg
        argv = ["sftp", "-q", "-F", "/dev/null", "-o", "BatchMode=yes",
                "-o", "UserKnownHostsFile=%s" % self.known_hosts,
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-c", c.cipher, "-o", "MACs=%s" % c.mac, "-i", self.ssh.user_key,
                "-P", str(ssh_port or self.ssh.port), "-b", "-", "%s@127.0.0.1" % self.ssh.login]
        env = dict(os.environ, HOME=self.bed.home)
        env.pop("SSH_AUTH_SOCK", None)
        t0 = time.monotonic()
        p = subprocess.run(argv, input=batch.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=time_limit(size) + 30)
        wall = time.monotonic() - t0
        if p.returncode != 0:
            raise BenchError("sftp %s: exit %d\n%s" % (what, p.returncode,
                                                         p.stderr.decode("utf-8", "replace")[-2000:]))
        return {"bytes": size, "seconds": wall, "mbps": size / wall / 1e6 if wall > 0 else 0.0}

    def stop(self, ep):
        """Stop a forwarder; for ftpssh, report an unclean exit."""
        if ep is None or not hasattr(ep, "daemon"):
            return None
        if isinstance(ep.daemon, Ftpssh):
            try:
                ep.daemon.stop(check=True)
            except AssertionError as e:
                return str(e).splitlines()[0]
            return None
        ep.daemon.stop()
        return None

    def start_greeter(self):
        """bench/greeter.py: a server that greets every client at once."""
        port = procs.free_port()
        d = procs.Daemon("greeter", [sys.executable, os.path.join(HERE, "greeter.py"),
                                     "--port", str(port)], self.bed.logdir)
        d.wait_port(port)
        d.kind, d.host, d.port = "greeter", "127.0.0.1", port
        return d

    def start_relay(self, rtt_ms):
        d = relay.start(self.bed.logdir, self.ssh.port, rtt_ms / 2.0)
        self.add_known_port(d.port)
        return d

    def relay_selfcheck(self, rtt_ms, size=256 * MIB):
        """The relay must not be the bottleneck: measure its round trip
        and its bulk rate to a local sink, at the same delay."""
        import socket
        import threading
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        sink_port = lsock.getsockname()[1]

        def handle(c):
            try:
                mode = c.recv(1)
                if mode == b"E":  # echo
                    while True:
                        d = c.recv(65536)
                        if not d:
                            break
                        c.sendall(d)
                elif mode:        # sink: count to EOF, answer the count
                    n = 1
                    while True:
                        d = c.recv(1 << 20)
                        if not d:
                            break
                        n += len(d)
                    c.sendall(b"%d" % n)
            except OSError:
                pass
            finally:
                c.close()

        def serve():
            while True:
                try:
                    c, _ = lsock.accept()
                except OSError:
                    return
                threading.Thread(target=handle, args=(c,), daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()
        d = None
        try:
            d = relay.start(self.bed.logdir, sink_port, rtt_ms / 2.0, name="delay-relay-check")
            port = d.port
            # An echo for the round trip...
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(b"E")
            t0 = time.monotonic()
            for _ in range(5):
                c.sendall(b"x")
                c.recv(1)
            rtt = (time.monotonic() - t0) / 5 * 1000
            c.close()
            # ...and a bulk transfer to the sink.
            c = socket.create_connection(("127.0.0.1", port), timeout=60)
            buf = b"\0" * MIB
            t0 = time.monotonic()
            c.sendall(b"S" + buf[1:])
            for _ in range(size // MIB - 1):
                c.sendall(buf)
            c.shutdown(socket.SHUT_WR)
            got = int(c.recv(64) or b"0")
            secs = time.monotonic() - t0
            c.close()
        finally:
            if d is not None:
                d.stop()
            try:
                lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            lsock.close()
        if got != size:
            raise BenchError("relay self-check: sink got %d of %d bytes" % (got, size))
        return rtt, size / secs / 1e6

    # --- libssh2's own ceiling ---------------------------------------------
    def reader(self, size, ssh_port=None, window=None):
        if not os.access(self.reader_bin, os.X_OK):
            raise BenchError("%s not built (make build/bench/ssh_reader)" % self.reader_bin)
        argv = [self.reader_bin, "-p", str(ssh_port or self.ssh.port), "-u", self.ssh.login,
                "-i", self.ssh.user_key, "-n", str(size), "-c", self.cfg.cipher,
                "-m", self.cfg.mac, "-t", str(time_limit(size))]
        if window:
            argv += ["-w", str(window)]
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=time_limit(size) + 30)
        if p.returncode != 0:
            raise BenchError("ssh_reader failed (%d): %s" % (p.returncode,
                                                            p.stderr.decode("utf-8", "replace")[-1000:]))
        kv = dict(x.split("=", 1) for x in p.stdout.decode().split())
        cpu = float(kv["cpu_user"]) + float(kv["cpu_sys"])
        return {"bytes": int(kv["bytes"]), "seconds": float(kv["seconds"]),
                "mbps": float(kv["mbps"]), "cpu": cpu}

    def ref_channels(self):
        """direct-tcpip channels sshd opened to the reference's passive ports."""
        ports = set(self.cfg.pasv_ports)
        return sum(1 for p in self.ssh.direct_tcpip_targets() if p in ports)

    def close(self, keep_logs=False):
        """Stop every daemon the rig started, then the test bed's."""
        self.ref_vsftpd.stop()
        self.bed.close(keep_logs=keep_logs)
