"""The SFTP front end (issue 14): `-L 127.0.0.1:0:sftp:/dir` makes ftpssh
answer FTP itself, every file operation an SFTP request on the one SSH
connection, against the test bed's real sshd running internal-sftp.

Every upload is checked on the server's disk (sha256 of the file sshd
wrote), every download against the file on disk. Clients: ftplib, curl,
lftp (mirror both ways, --parallel=4), wget -m. Also: passive and active
mode, a second local uid (nobody, via setpriv) refused by default and
admitted with --sftp-allow-uid, permission-denied and missing-file
replies, ABOR mid-RETR, a 10 000-entry listing, a 5 GiB sparse file's
SIZE and a REST near its end.
"""

import ftplib
import getpass
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from harness import clients, ftpssh, procs, testbed
from harness.tunnel import wait_for

pytestmark = pytest.mark.ftpssh_only


def sha(data):
    return hashlib.sha256(data).hexdigest()


class _Srv:
    """Stands in for an FTP server in Ftpssh's bookkeeping (one -L)."""
    kind = "sftp"
    host = "sftp"
    port = 0


class Front:
    def __init__(self, bed, ssh, root, extra=(), bind="127.0.0.1"):
        self.root = root
        self.fs = ftpssh.Ftpssh(bed, [], ssh=ssh, wait=False,
                                extra=["-L", "%s:0:sftp:%s" % (bind, root)] + list(extra))
        self.fs.servers = [_Srv()]
        self.fs.wait_ready()
        self.port = self.fs.ports[0]

    def ftp(self, login=True, **kw):
        f = ftplib.FTP()
        f.connect("127.0.0.1", self.port, timeout=30 * procs.time_scale())
        if login:
            f.login("anyone", "anything")
        return f

    def disk(self, name):
        return os.path.join(self.root, name)

    def stop(self):
        self.fs.stop()


@pytest.fixture(scope="module")
def sshd(bed):
    # the test bed's sshd config has `Subsystem sftp internal-sftp`; an
    # sshd of its own keeps this file's channels out of the shared log
    return bed.extra_sshd("sftp-ssh")


@pytest.fixture(scope="module")
def front(bed, sshd):
    root = bed.path("sftproot")
    os.makedirs(root, exist_ok=True)
    f = Front(bed, sshd, root)
    yield f
    f.stop()


@pytest.fixture
def area(front, request):
    """A fresh directory under the root for one test; its name."""
    name = "t-" + request.node.name.replace("[", "-").replace("]", "")[:60]
    path = front.disk(name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    yield name
    shutil.rmtree(path, ignore_errors=True)


def put_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def get_file(path):
    with open(path, "rb") as f:
        return f.read()


# ---- ftplib: the command set -------------------------------------------

def test_login_pwd_syst_feat(front):
    f = front.ftp(login=False)
    assert f.getwelcome().startswith("220")
    assert f.login("whoever", "whatever").startswith("230")
    assert f.pwd() == front.root
    assert f.sendcmd("SYST").startswith("215 UNIX")
    feat = f.sendcmd("FEAT")
    for k in ("EPSV", "MDTM", "MLST type*", "REST STREAM", "SIZE", "UTF8"):
        assert k in feat
    assert f.sendcmd("OPTS UTF8 ON").startswith("200")
    assert f.sendcmd("TYPE I").startswith("200")
    assert f.sendcmd("MODE S").startswith("200")
    assert f.sendcmd("STRU F").startswith("200")
    assert f.sendcmd("NOOP").startswith("200")
    with pytest.raises(ftplib.error_perm, match="^504"):
        f.sendcmd("MODE B")
    with pytest.raises(ftplib.error_perm, match="^502"):
        f.sendcmd("SMNT /")
    assert f.quit().startswith("221")


def test_commands_need_login(front):
    f = front.ftp(login=False)
    with pytest.raises(ftplib.error_perm, match="^530"):
        f.sendcmd("PWD")
    with pytest.raises(ftplib.error_perm, match="^530"):
        f.sendcmd("LIST")
    f.close()


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (8 << 20) + 12345])
@pytest.mark.parametrize("mode", ["epsv", "pasv", "port"])
def test_retr_stor(front, area, size, mode):
    data = os.urandom(size)
    f = front.ftp()
    f.set_pasv(mode != "port")
    if mode == "epsv":
        f.af = socket.AF_INET6  # ftplib uses EPSV when af is not IPv4
    try:
        f.cwd(area)
        f.storbinary("STOR up.bin", io.BytesIO(data))
        assert sha(get_file(front.disk(area + "/up.bin"))) == sha(data)
        put_file(front.disk(area + "/down.bin"), data[::-1])
        got = bytearray()
        f.retrbinary("RETR down.bin", got.extend)
        assert sha(bytes(got)) == sha(data[::-1])
        if size:
            assert f.size("down.bin") == size
    finally:
        f.af = socket.AF_INET
        f.quit()


def test_appe_rest_stor_and_retr(front, area):
    a, b = os.urandom(300000), os.urandom(200000)
    f = front.ftp()
    f.cwd(area)
    f.storbinary("STOR f", io.BytesIO(a))
    f.storbinary("APPE f", io.BytesIO(b))
    assert get_file(front.disk(area + "/f")) == a + b
    # resumed upload: REST 100000 then STOR writes from there, keeps the head
    c = os.urandom(50000)
    f.storbinary("STOR f", io.BytesIO(c), rest=100000)
    want = (a + b)[:100000] + c + (a + b)[150000:]
    assert sha(get_file(front.disk(area + "/f"))) == sha(want)
    got = bytearray()
    f.retrbinary("RETR f", got.extend, rest=123456)
    assert bytes(got) == want[123456:]
    f.quit()


def test_dirs_rename_delete_mdtm_chmod(front, area):
    f = front.ftp()
    f.cwd(area)
    assert f.mkd("sub") == front.root + "/" + area + "/sub"
    assert os.path.isdir(front.disk(area + "/sub"))
    f.cwd("sub")
    assert f.pwd() == front.root + "/" + area + "/sub"
    f.storbinary("STOR x", io.BytesIO(b"x" * 10))
    f.sendcmd("CDUP")
    assert f.pwd() == front.root + "/" + area
    f.rename("sub/x", "y")
    assert os.path.exists(front.disk(area + "/y"))
    assert not os.path.exists(front.disk(area + "/sub/x"))
    # rename over an existing file replaces it, as FTP servers do
    put_file(front.disk(area + "/z"), b"old")
    f.rename("y", "z")
    assert get_file(front.disk(area + "/z")) == b"x" * 10
    os.utime(front.disk(area + "/z"), (0, 1700000000))
    assert f.sendcmd("MDTM z") == "213 20231114221320"
    assert f.sendcmd("SITE CHMOD 640 z").startswith("200")
    assert os.stat(front.disk(area + "/z")).st_mode & 0o777 == 0o640
    f.delete("z")
    assert not os.path.exists(front.disk(area + "/z"))
    f.rmd("sub")
    assert not os.path.exists(front.disk(area + "/sub"))
    f.quit()


def test_errors(front, area):
    f = front.ftp()
    f.cwd(area)
    for cmd in ("RETR nope", "SIZE nope", "MDTM nope", "DELE nope", "CWD nope", "RMD nope",
                "RNFR nope"):
        with pytest.raises(ftplib.error_perm) as e:
            if cmd.startswith("RETR"):
                f.retrbinary(cmd, lambda b: None)
            else:
                f.sendcmd(cmd)
        assert str(e.value).startswith("550"), (cmd, str(e.value))
        assert "no such file" in str(e.value).lower(), (cmd, str(e.value))
    # permission denied: a directory sshd's user may not write (root
    # ignores modes, so use an immutable-free trick: a path under a file)
    put_file(front.disk(area + "/plain"), b"p")
    with pytest.raises(ftplib.error_perm) as e:
        f.storbinary("STOR plain/inside", io.BytesIO(b"1"))
    assert str(e.value)[:3] in ("550", "553")
    with pytest.raises(ftplib.error_perm) as e:
        f.sendcmd("MKD plain")
    assert str(e.value).startswith("550")
    with pytest.raises(ftplib.error_perm, match="^550.*not a plain file"):
        f.retrbinary("RETR .", lambda b: None)
    # the session goes on
    assert f.sendcmd("NOOP").startswith("200")
    f.quit()


def test_list_nlst_mlsd_mlst(front, area):
    names = ["a.txt", "caf\u00e9 \u00fcber.bin", "dir"]
    put_file(front.disk(area + "/" + names[0]), b"12345")
    put_file(front.disk(area + "/" + names[1]), b"")
    os.makedirs(front.disk(area + "/dir"))
    f = front.ftp()
    f.encoding = "utf-8"
    f.cwd(area)
    assert sorted(f.nlst()) == sorted(names)
    lines = []
    f.retrlines("LIST", lines.append)
    assert len(lines) == 3
    by = {l.split(None, 8)[8]: l for l in lines}
    assert by["a.txt"].startswith("-rw") and by["a.txt"].split()[4] == "5"
    assert by["dir"].startswith("d")
    facts = dict(f.mlsd())
    assert facts["a.txt"]["type"] == "file" and facts["a.txt"]["size"] == "5"
    assert facts["dir"]["type"] == "dir"
    assert facts[names[1]]["size"] == "0"
    mlst = f.sendcmd("MLST a.txt")
    assert "type=file;size=5;" in mlst
    # LIST of one file lists that file
    lines = []
    f.retrlines("LIST a.txt", lines.append)
    assert len(lines) == 1 and lines[0].endswith(" a.txt")
    # the empty file downloads as empty
    got = bytearray()
    f.retrbinary("RETR " + names[1], got.extend)
    assert got == b""
    f.quit()


def test_type_a_converts_line_ends(front, area):
    put_file(front.disk(area + "/t.txt"), b"one\ntwo\n\nthree")
    f = front.ftp()
    f.cwd(area)
    # ftplib's retrbinary/storbinary would send TYPE I: drive the data
    # connections by hand to see the raw ASCII stream
    f.sendcmd("TYPE A")
    with f.transfercmd("RETR t.txt") as conn:
        got = b"".join(iter(lambda: conn.recv(65536), b""))
    assert f.voidresp().startswith("226")
    assert got == b"one\r\ntwo\r\n\r\nthree"
    with f.transfercmd("STOR u.txt") as conn:
        conn.sendall(b"a\r\nb\r\n\r\nc\rd")
    assert f.voidresp().startswith("226")
    f.sendcmd("TYPE I")
    assert get_file(front.disk(area + "/u.txt")) == b"a\nb\n\nc\rd"
    f.quit()


def test_port_rules(front):
    f = front.ftp()
    with pytest.raises(ftplib.error_perm, match="^501.*loopback"):
        f.sendcmd("PORT 10,0,0,1,100,100")
    with pytest.raises(ftplib.error_perm, match="^501.*below 1024"):
        f.sendcmd("EPRT |1|127.0.0.1|21|")
    assert f.sendcmd("NOOP").startswith("200")
    f.quit()


def test_abor_mid_retr(front, area):
    big = front.disk(area + "/big")
    with open(big, "wb") as fh:
        fh.truncate(256 << 20)  # sparse: reads fast, far more than fits in buffers
    f = front.ftp()
    f.cwd(area)
    conn = f.transfercmd("RETR big")
    got = 0
    while got < (4 << 20):
        b = conn.recv(65536)
        assert b
        got += len(b)
    assert f.sendcmd("STAT").startswith("213 Transfer in progress")
    # ABOR with the data connection still open (ftplib's abort sends it urgent)
    resp = f.abort()
    conn.close()
    # RFC 959: 426 for the transfer, then 226 for the ABOR itself
    assert resp.startswith("426"), resp
    assert f.getresp().startswith("226")
    # the session is usable at once, and a whole RETR still works
    assert f.sendcmd("NOOP").startswith("200")
    put_file(front.disk(area + "/small"), b"s" * 1000)
    got = bytearray()
    f.retrbinary("RETR small", got.extend)
    assert got == b"s" * 1000
    f.quit()
    # the SFTP reads stopped: the transfer's log line counts far less
    # than the file (its bytes are what reached the client)
    m = re.search(r"RETR big: ([0-9.]+) (MiB|KiB) .*\(failed\)", front.fs.stderr())
    assert m, front.fs.stderr()[-2000:]
    assert m.group(2) == "KiB" or float(m.group(1)) < 128
    assert front.fs.alive()


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_client_bounded_memory(front, area):
    """A client that stops reading stops the SFTP reads: ftpssh's memory
    does not grow with the file."""
    with open(front.disk(area + "/big"), "wb") as fh:
        fh.truncate(1 << 30)
    f = front.ftp()
    f.cwd(area)
    conn = f.transfercmd("RETR big")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    conn.recv(65536)
    before = vm_rss_kib(front.fs.pid)
    time.sleep(2)  # at loopback speed the whole GiB would have been read by now
    after = vm_rss_kib(front.fs.pid)
    assert after - before < 48 * 1024, (before, after)
    # the status table (SIGUSR1) shows the session and its transfer
    mark = len(front.fs.stderr())
    os.kill(front.fs.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10 * procs.time_scale()
    while "bytes so far)" not in front.fs.stderr()[mark:]:
        assert time.monotonic() < deadline, front.fs.stderr()[mark:]
        time.sleep(0.05)
    row = [l for l in front.fs.stderr()[mark:].splitlines() if "bytes so far)" in l][0]
    assert "RETR big" in row and "(sftp, " in row, row
    # the client leaves without a word, mid-transfer
    conn.close()
    f.sock.close()
    f2 = front.ftp()
    assert f2.sendcmd("NOOP").startswith("200")
    f2.quit()
    assert front.fs.alive()


def test_client_vanishes_mid_stor(front, area):
    f = front.ftp()
    f.cwd(area)
    conn = f.transfercmd("STOR partial")
    conn.sendall(os.urandom(3 << 20))
    conn.close()
    f.sock.close()
    # ftpssh lives on and serves the next client
    g = front.ftp()
    g.cwd(area)
    g.storbinary("STOR whole", io.BytesIO(b"w" * 5000))
    assert get_file(front.disk(area + "/whole")) == b"w" * 5000
    g.quit()
    assert front.fs.alive()


def test_big_sparse_size_and_rest(front, area):
    path = front.disk(area + "/huge")
    size = 5 << 30
    with open(path, "wb") as fh:
        fh.seek(size - 100)
        fh.write(b"T" * 100)
    f = front.ftp()
    f.cwd(area)
    assert f.size("huge") == size
    got = bytearray()
    f.retrbinary("RETR huge", got.extend, rest=size - 1000)
    assert bytes(got) == b"\0" * 900 + b"T" * 100
    lines = []
    f.retrlines("LIST huge", lines.append)
    assert lines[0].split()[4] == str(size)
    f.quit()


def test_ten_thousand_entries(front, area):
    d = front.disk(area)
    for i in range(10000):
        open(os.path.join(d, "entry-%05d" % i), "wb").close()
    f = front.ftp()
    f.cwd(area)
    t0 = time.monotonic()
    names = f.nlst()
    assert len(names) == 10000 and set(names) == {"entry-%05d" % i for i in range(10000)}
    facts = list(f.mlsd())
    assert len(facts) == 10000
    lines = []
    f.retrlines("LIST", lines.append)
    assert len(lines) == 10000
    assert time.monotonic() - t0 < 60 * procs.time_scale()
    f.quit()


# ---- who may log in ------------------------------------------------------

NOBODY_LOGIN = r"""
import ftplib, sys
f = ftplib.FTP()
f.connect("127.0.0.1", int(sys.argv[1]), timeout=20)
try:
    print(f.login("u", "p"))
    print(f.pwd())
    f.set_pasv(True)
    print(len(f.nlst()))
except ftplib.all_errors as e:
    print("ERR", e)
    try:
        f.voidcmd("NOOP")
        print("STILL OPEN")
    except ftplib.all_errors as e2:
        print("CLOSED", type(e2).__name__)
"""


def as_nobody(port):
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "/usr/bin/python3", "-c", NOBODY_LOGIN, str(port)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60 * procs.time_scale())
    return r.stdout.decode() + r.stderr.decode()


def test_other_uid_refused_by_default(front):
    out = as_nobody(front.port)
    assert "ERR 530" in out and "may not use" in out, out
    assert "230" not in out
    # told, then closed: it would hold a descriptor (and a session slot)
    assert "CLOSED" in out, out
    nobody = __import__("pwd").getpwnam("nobody").pw_uid
    assert "client 127.0.0.1" in front.fs.stderr()
    assert "uid %d, not allowed" % nobody in front.fs.stderr()


NOBODY_HOLD = r"""
import socket, sys, time
held = []
for i in range(int(sys.argv[2])):
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
    print(c.recv(200).decode().strip())
    held.append(c)
sys.stdout.flush()
time.sleep(float(sys.argv[3]))
"""


def test_refused_uid_takes_few_descriptors_and_no_sessions(bed, sshd):
    """Connections of a uid that will be refused at login (nobody) take a
    descriptor each until told, at most 8 at a time, and no session slot:
    with --max-sessions=2, the allowed user still gets in while nobody
    holds 10 connections (the last 2 refused at once)."""
    root = bed.path("refused-root")
    os.makedirs(root, exist_ok=True)
    fr = Front(bed, sshd, root, extra=["--max-sessions=2"])
    try:
        p = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                              "/usr/bin/python3", "-c", NOBODY_HOLD, str(fr.port), "10", "4"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, cwd="/", env={"PATH": "/usr/bin:/bin"})
        lines = []
        for _ in range(10):  # its greetings, as they come
            lines.append(p.stdout.readline().decode().strip())
        # nobody holds its connections now: two allowed sessions fit
        sessions, errors = logged_in_sessions(fr, 2)
        assert not errors, errors
        quit_all(sessions)
        p.wait(timeout=30 * procs.time_scale())
        told = [l for l in lines if l.startswith("220 ftpssh SFTP front end (login will be refused)")]
        refused = [l for l in lines if l.startswith("421 ftpssh: uid")]
        assert len(told) == 8 and len(refused) == 2, lines
    finally:
        fr.stop()


def test_other_uid_admitted_with_option(bed, sshd, front):
    # nobody must reach the files through the SFTP side only: the root
    # directory is the test's own, the data port checks nobody's uid
    other = Front(bed, sshd, front.root, extra=["--sftp-allow-uid=nobody"])
    try:
        out = as_nobody(other.port)
        lines = out.split("\n")
        assert lines[0].startswith("230"), out
        assert lines[1] == front.root, out
        assert not out.startswith("ERR") and "ERR" not in out, out
    finally:
        other.stop()


def test_data_port_owner_checked(front, area):
    """A nobody process connecting first to the EPSV port is turned away;
    the client's own connection then gets the data."""
    from harness.thief import Thief
    put_file(front.disk(area + "/f"), b"secret" * 1000)
    f = front.ftp()
    f.cwd(area)
    port = int(f.sendcmd("EPSV").split("|")[3])
    t = Thief("127.0.0.1", port)
    assert t.wait_connected()
    r = t.result()
    assert r["bytes"] == 0, r
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    f.sendcmd("TYPE I")
    assert f.sendcmd("RETR f").startswith("150")
    got = b"".join(iter(lambda: s.recv(65536), b""))
    s.close()
    assert f.voidresp().startswith("226")
    assert got == b"secret" * 1000
    f.quit()
    assert "data connection of uid %d refused" % Thief.uid() in front.fs.stderr()


# ---- real clients -----------------------------------------------------------

def make_tree(root):
    """A small tree: sizes 0 .. 3 MiB, a UTF-8 name, nested directories."""
    files = {
        "a.bin": os.urandom(3 << 20),
        "empty": b"",
        "caf\u00e9.txt": b"caf\xc3\xa9\n" * 100,
        "sub/b.bin": os.urandom(100000),
        "sub/deeper/c.bin": os.urandom(1),
        "sub2/d.bin": os.urandom(70000),
    }
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        put_file(p, data)
    return {k: sha(v) for k, v in files.items()}


def tree_hashes(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = sha(get_file(p))
    return out


def target(front):
    return ftpssh.Target("127.0.0.1", front.port, None)


@pytest.mark.parametrize("mode", ["epsv", "pasv", "port"])
def test_curl(bed, front, area, scratch, mode):
    c = clients.Curl(bed, target(front), user="x", password="y")
    src = bed.uploads["1M"]
    c.stor(src.path, area + "/up.bin", mode=mode)
    assert testbed.sha256_file(front.disk(area + "/up.bin")) == src.sha256
    local = os.path.join(bed.clientdir, "curl-%s.bin" % mode)
    scratch.append(local)
    c.retr(area + "/up.bin", local, mode=mode)
    assert testbed.sha256_file(local) == src.sha256
    # append, then list
    c.run(c.base(mode) + ["--append", "-T", src.path, c.url(area + "/up.bin")], "APPE")
    assert sha(get_file(front.disk(area + "/up.bin"))) == sha(get_file(src.path) * 2)
    r = c.run(c.base(mode) + [c.url(area + "/")], "LIST")
    assert "up.bin" in r[0] and str(2 * src.size) in r[0]
    # create a directory on upload, delete a file with -Q
    c.run(c.base(mode) + ["--ftp-create-dirs", "-T", src.path, c.url(area + "/new/dir/f")],
          "STOR with MKD")
    assert testbed.sha256_file(front.disk(area + "/new/dir/f")) == src.sha256
    c.run(c.base(mode) + ["-Q", "DELE %s/up.bin" % area, c.url(area + "/")], "DELE")
    assert not os.path.exists(front.disk(area + "/up.bin"))


def test_lftp_mirror_both_ways(bed, front, area):
    src = os.path.join(bed.clientdir, "mirror-src")
    shutil.rmtree(src, ignore_errors=True)
    want = make_tree(src)
    # the harness runs clients with LC_ALL=C: tell lftp the local names
    # are UTF-8, as the server's FEAT says its names are
    l = clients.Lftp(bed, target(front), user="x", password="y",
                     settings=["file:charset utf-8"])
    # upload the tree, then download it back (4 transfers at once)
    l._go(None, ["mirror -R --parallel=4 %s %s/up" % (src, area)], "mirror -R")
    assert tree_hashes(front.disk(area + "/up")) == want
    back = os.path.join(bed.clientdir, "mirror-back")
    shutil.rmtree(back, ignore_errors=True)
    l._go(None, ["mirror --parallel=4 %s/up %s" % (area, back)], "mirror")
    assert tree_hashes(back) == want
    # and once more with one connection, in active mode: nothing to do
    r = l._go("port", ["mirror %s/up %s" % (area, back)], "mirror again")
    assert tree_hashes(back) == want
    # rename, remove, rmdir through lftp
    l._go(None, ["cd %s/up" % area, "mv a.bin a2.bin", "rm empty", "rm -r sub2",
                 "mkdir made"], "mv/rm/mkdir")
    up = front.disk(area + "/up")
    assert os.path.exists(up + "/a2.bin") and not os.path.exists(up + "/a.bin")
    assert not os.path.exists(up + "/empty") and not os.path.exists(up + "/sub2")
    assert os.path.isdir(up + "/made")
    shutil.rmtree(src)
    shutil.rmtree(back)


def test_wget_mirror(bed, front, area):
    want = make_tree(front.disk(area + "/tree"))
    w = clients.Wget(bed, target(front), user="x", password="y")
    d = os.path.join(bed.clientdir, "wget-m")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    w.run(w.base() + ["-m", "-nH", "--restrict-file-names=nocontrol", "-P", d, w.url(area + "/tree/")], "mirror")
    got = tree_hashes(os.path.join(d, area, "tree"))
    got = {k: v for k, v in got.items() if not k.endswith(".listing")}
    assert got == want
    shutil.rmtree(d)


# ---- a chrooted account ------------------------------------------------------

@pytest.fixture(scope="module")
def chroot_front(bed):
    # sshd wants every component of a ChrootDirectory root-owned and not
    # writable by others: /tmp (the test bed's home) is not, /run is.
    root = tempfile.mkdtemp(prefix="ftpssh-chroot-", dir="/run")
    os.chmod(root, 0o755)
    os.makedirs(os.path.join(root, "pub"))
    ssh = bed.extra_sshd("sftp-chroot", extra_config=[
        "Match User %s" % getpass.getuser(),
        "    ChrootDirectory %s" % root,
        "    ForceCommand internal-sftp",
    ])
    fs = ftpssh.Ftpssh(bed, [], ssh=ssh, wait=False, extra=["-L", "127.0.0.1:0:sftp"])
    fs.servers = [_Srv()]
    try:
        fs.wait_ready()
        yield fs, root
    finally:
        fs.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_chrooted_account(chroot_front):
    fs, root = chroot_front
    f = ftplib.FTP()
    f.connect("127.0.0.1", fs.ports[0], timeout=30 * procs.time_scale())
    f.login("x", "y")
    assert f.pwd() == "/"  # the chroot, seen from inside
    data = os.urandom(200000)
    f.storbinary("STOR /pub/up.bin", io.BytesIO(data))
    assert sha(get_file(os.path.join(root, "pub", "up.bin"))) == sha(data)
    f.cwd("..")  # ".." of the root is the root
    assert f.pwd() == "/"
    got = bytearray()
    f.retrbinary("RETR ../../pub/up.bin", got.extend)
    assert sha(bytes(got)) == sha(data)
    # the host's files are out of reach
    with pytest.raises(ftplib.error_perm, match="^550"):
        f.sendcmd("SIZE /etc/passwd")
    assert sorted(f.nlst()) == ["pub"]
    f.delete("/pub/up.bin")
    assert not os.path.exists(os.path.join(root, "pub", "up.bin"))
    f.quit()


# ---- several sessions, a lost tunnel, the command line --------------------------

def test_parallel_sessions(front, area):
    """Eight sessions at once, each with its own SFTP channel, each a STOR
    and a RETR checked byte for byte."""
    import threading
    blobs = [os.urandom(300000 + i) for i in range(8)]
    errors = []

    def one(i):
        try:
            f = front.ftp()
            f.cwd(area)
            f.storbinary("STOR p%d" % i, io.BytesIO(blobs[i]))
            got = bytearray()
            f.retrbinary("RETR p%d" % i, got.extend)
            assert bytes(got) == blobs[i]
            f.quit()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("%d: %r" % (i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * procs.time_scale())
    assert not errors, errors
    for i in range(8):
        assert sha(get_file(front.disk(area + "/p%d" % i))) == sha(blobs[i])
    assert front.fs.ssh_connections() == 1


# ---- shared SFTP channels (sshd's MaxSessions) ---------------------------

SFTP_CHANNELS_MAX = 8  # mux/sftp_chan.h


def own_front(bed, name, sshd_config=(), extra=()):
    """An sshd of the test's own (sshd_config lines added) and an SFTP
    front end on it, serving a fresh directory: (sshd, root, front)."""
    ssh = bed.extra_sshd(name, extra_config=list(sshd_config))
    root = bed.path(name + "-root")
    os.makedirs(root, exist_ok=True)
    return ssh, root, Front(bed, ssh, root, extra=extra)


def reset(f):
    """Close f's control connection with a reset, not an EOF: a session
    waits for its reply before it takes a plain EOF, but ends at once on
    a reset."""
    f.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    f.close()


def sftp_channel_starts(ssh):
    """Subsystem channels sshd started so far (its INFO line for each)."""
    return ssh.log_text().count("Starting session: subsystem 'sftp'")


def holders_of(ssh, path):
    """The sshd processes (internal-sftp runs in sshd's session children)
    that have path open."""
    pids = []
    for pid in ssh.connection_pids():
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path:
                    pids.append(pid)
                    break
            except OSError:
                pass
    return pids


def sftp_servers(ssh):
    """sshd's internal-sftp processes: the leaves of its process tree (one
    per subsystem channel, below the connection's own processes)."""
    pids = ssh.connection_pids()
    parents = set()
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                parents.add(int(f.read().rsplit(")", 1)[1].split()[1]))
        except OSError:
            pass
    return [p for p in pids if p not in parents]


def logged_in_sessions(front, n):
    """n sessions logged in at once (each answers PWD), or the failures."""
    sessions, errors = [], []
    for i in range(n):
        try:
            f = front.ftp()
            f.pwd()
            sessions.append(f)
        except (OSError, ftplib.Error) as e:
            errors.append("session %d: %r" % (i, e))
    return sessions, errors


def quit_all(sessions):
    for f in sessions:
        try:
            f.quit()
        except (OSError, ftplib.Error):
            f.close()


def test_sessions_beyond_the_channel_cap_share_channels(bed):
    """Twelve sessions on an sshd with the default MaxSessions (10): an
    FTP session per channel failed the 11th with 421. ftpssh opens at
    most 8 channels and the sessions beyond share them."""
    ssh, root, fr = own_front(bed, "sftp-cap")
    sessions = []
    try:
        sessions, errors = logged_in_sessions(fr, 12)
        assert not errors, errors
        put_file(os.path.join(root, "f"), b"shared" * 1000)
        for i, f in enumerate(sessions):
            got = bytearray()
            f.retrbinary("RETR f", got.extend)
            assert bytes(got) == b"shared" * 1000, "session %d" % i
        starts = sftp_channel_starts(ssh)
        assert starts == SFTP_CHANNELS_MAX, (
            "sshd started %d sftp channels for 12 sessions, want %d" % (starts, SFTP_CHANNELS_MAX))
        assert fr.fs.ssh_connections() == 1
    finally:
        quit_all(sessions)
        fr.stop()


def test_hardened_server_maxsessions_2(bed):
    """sshd with MaxSessions 2 refuses the third channel: ftpssh learns the
    limit and seven sessions share two channels, each with transfers both
    ways running at once, checked byte for byte. A session whose client
    vanishes mid-RETR leaves no file open on the shared channel: its
    handle is CLOSEd while the channel lives on (sshd's process lets go
    of the file)."""
    import threading
    # -v: when a session ends; 7 per user: room for the sessions below,
    # and none while the reset one still waits for its OPEN's reply
    ssh, root, fr = own_front(bed, "sftp-ms2", ["MaxSessions 2"],
                              ["-v", "--max-sessions-per-user=7"])
    sessions = []
    try:
        sessions, errors = logged_in_sessions(fr, 6)
        assert not errors, errors
        assert re.search(r"the server refused another sftp channel .*FTP sessions now share 2",
                         fr.fs.stderr()), fr.fs.stderr()[-3000:]
        blobs = [os.urandom((1 << 20) + 4099 * i) for i in range(6)]
        for i in range(0, 6, 2):
            put_file(os.path.join(root, "d%d" % i), blobs[i])
        errors = []

        def work(i, f):
            try:
                if i % 2 == 0:
                    got = bytearray()
                    f.retrbinary("RETR d%d" % i, got.extend)
                    assert bytes(got) == blobs[i], "RETR d%d differs" % i
                else:
                    f.storbinary("STOR u%d" % i, io.BytesIO(blobs[i]))
                    names = f.nlst()
                    assert "u%d" % i in names, names
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("session %d: %r" % (i, e))

        threads = [threading.Thread(target=work, args=(i, f)) for i, f in enumerate(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * procs.time_scale())
        assert not errors, errors
        for i in range(1, 6, 2):
            assert sha(get_file(os.path.join(root, "u%d" % i))) == sha(blobs[i]), i

        # the seventh session goes where the others are; its client
        # vanishes mid-RETR without a word
        with open(os.path.join(root, "big"), "wb") as fh:
            fh.truncate(256 << 20)
        big = os.path.join(root, "big")
        v = fr.ftp()
        conn = v.transfercmd("RETR big")
        got = 0
        while got < (1 << 20):
            b = conn.recv(65536)
            assert b
            got += len(b)
        assert holders_of(ssh, big), "no sshd process has %s open mid-RETR" % big
        conn.close()
        v.sock.close()
        v.close()
        deadline = time.monotonic() + 10 * procs.time_scale()
        while holders_of(ssh, big) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not holders_of(ssh, big), (
            "sshd's sftp server %s still holds %s open after its session went"
            % (holders_of(ssh, big), big))
        # an OPEN whose session is gone before the reply comes: the sftp
        # servers are stopped while it is sent, the client leaves, and the
        # handle that comes back is CLOSEd by ftpssh alone
        big2 = os.path.join(root, "big2")
        shutil.copyfile(os.path.join(root, "d0"), big2)
        w = fr.ftp()
        w_id = int(re.findall(r"\[#(\d+)\] FTP client", fr.fs.stderr())[-1])
        servers = sftp_servers(ssh)
        assert len(servers) == 2, "want the 2 sftp server processes, found %s" % servers
        with procs.stopped(servers):
            host, port = ftplib.parse227(w.sendcmd("PASV"))
            data = socket.create_connection((host, port), timeout=10)
            w.putcmd("RETR big2")
            time.sleep(0.3)
            reset(w)
            data.close()
            wait_for(lambda: re.search(r"\[#%d\] sftp session from .* ends after" % w_id,
                                       fr.fs.stderr()),
                     10, "the session of the vanished client to end, its OPEN in flight")
            # it still counts: its request runs on the shared channel
            g = ftplib.FTP()
            with pytest.raises(ftplib.error_temp, match="too many sessions for uid"):
                g.connect("127.0.0.1", fr.port, timeout=30 * procs.time_scale())
            g.close()
        deadline = time.monotonic() + 10 * procs.time_scale()
        while holders_of(ssh, big2) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not holders_of(ssh, big2), "an orphaned OPEN's handle stayed open"
        # answered: it no longer counts
        g = fr.ftp()
        assert g.pwd() == root
        g.quit()
        # ... and the channels still serve the others
        for i, f in enumerate(sessions):
            assert f.sendcmd("SIZE d0").startswith("213"), i
        assert sftp_channel_starts(ssh) == 2
    finally:
        quit_all(sessions)
        fr.stop()


def test_sessions_one_after_another_on_maxsessions_1(bed):
    """A script's session per file on a server with MaxSessions 1: each
    new session's channel was refused while the last one's was still
    closing (6 of 20 failed with 421). Now a channel refused while one of
    ours is closing opens again once it has closed, and, the server being
    tight, a channel waits 15 s for the next client: twenty sessions in a
    row, none refused; and ftpssh still stops at once."""
    ssh, root, fr = own_front(bed, "sftp-ms1", ["MaxSessions 1"])
    put_file(os.path.join(root, "f"), b"one" * 100)
    try:
        for i in range(20):
            f = fr.ftp()
            assert f.sendcmd("SIZE f") == "213 300", i
            f.quit()
        # a channel is kept for the next once the limit is known
        assert sftp_channel_starts(ssh) < 20 or "now share" not in fr.fs.stderr()
    finally:
        t0 = time.monotonic()
        fr.stop()
    assert time.monotonic() - t0 < 5 * procs.time_scale(), "the idle channel held up the stop"


def test_stuck_channel_is_neither_kept_nor_joined(bed):
    """MaxSessions 1, and the one channel's server sits on a request (its
    sftp server stopped) whose session has gone: the next session gets a
    quick 421 instead of a login that hangs on the stalled channel."""
    ssh, root, fr = own_front(bed, "sftp-ms1-stuck", ["MaxSessions 1"])
    try:
        f = fr.ftp()
        servers = sftp_servers(ssh)
        assert len(servers) == 1, servers
        with procs.stopped(servers):
            assert not responds(f)
            reset(f)
            time.sleep(5.5)  # the request is older than STUCK_MS
            # g's channel is refused (the stuck one is still counted) and
            # waits 2 s for it to close; h joins g's waiting channel
            # meanwhile, which must not stop that wait: both get their 421
            # (a hang before)
            t0 = time.monotonic()
            g = ftplib.FTP()
            g.connect("127.0.0.1", fr.port, timeout=10 * procs.time_scale())
            time.sleep(0.5)
            h = ftplib.FTP()
            h.connect("127.0.0.1", fr.port, timeout=10 * procs.time_scale())
            for x in (g, h):
                with pytest.raises(ftplib.error_temp, match="^421"):
                    x.login("anyone", "anything")
                x.close()
            assert time.monotonic() - t0 < 5 * procs.time_scale()
    finally:
        fr.stop()


def responds(f, secs=1.0):
    """Does session f answer SIZE within secs? (A session that did not is
    left with its request pending, and is not used again.)"""
    f.sock.settimeout(secs)
    try:
        f.sendcmd("SIZE /")
    except ftplib.Error:
        pass  # any reply will do
    except OSError:
        return False
    f.sock.settimeout(30 * procs.time_scale())
    return True


def test_new_session_avoids_a_stuck_channel(bed):
    """A channel whose server sits on a request (a FIFO, a hung mount: here
    its sftp server is stopped) is not given new sessions while another
    channel answers, though it has fewer sessions on it."""
    ssh, root, fr = own_front(bed, "sftp-stuck", ["MaxSessions 2"])
    sessions = []
    try:
        sessions, errors = logged_in_sessions(fr, 4)  # two on each channel
        assert not errors, errors
        servers = sftp_servers(ssh)
        assert len(servers) == 2, servers
        with procs.stopped(servers[:1]):
            hung = [f for f in sessions if not responds(f)]
            assert len(hung) == 2, ("%d sessions on the stopped server's channel, want 2"
                                    % len(hung))
            reset(hung[0])  # now 1 session there, 2 on the other channel
            sessions.remove(hung[0])
            time.sleep(5.5)  # the hung requests are older than STUCK_MS (mux/sftp_chan.c)
            f = ftplib.FTP()
            f.connect("127.0.0.1", fr.port, timeout=3 * procs.time_scale())
            f.login("anyone", "anything")
            sessions.append(f)
            assert f.pwd() == root
    finally:
        quit_all(sessions)
        fr.stop()


# ---- the caps and the idle timeout of every session -----------------------

def test_session_caps_count_both_front_ends(bed, sshd):
    """--max-sessions-per-user counts the SFTP front end's sessions with
    the relayed ones (they had no cap at all): one of each, then the third
    of the same uid gets 421 from either; one leaving makes room."""
    root = bed.path("caps-root")
    os.makedirs(root, exist_ok=True)
    fs = ftpssh.Ftpssh(bed, [bed.ftp_server("pyftpdlib")], ssh=sshd, wait=False,
                       extra=["-L", "127.0.0.1:0:sftp:" + root, "--max-sessions-per-user=2"])
    fs.servers = fs.servers + [_Srv()]
    fs.wait_ready()
    relay_port, sftp_port = fs.ports
    opened = []
    try:
        r = clients.open_ftplib(fs.targets[0])
        opened.append(r)
        f = ftplib.FTP()
        f.connect("127.0.0.1", sftp_port, timeout=30 * procs.time_scale())
        f.login("anyone", "anything")
        opened.append(f)
        for port in (sftp_port, relay_port):
            g = ftplib.FTP()
            with pytest.raises(ftplib.error_temp, match="too many sessions for uid"):
                g.connect("127.0.0.1", port, timeout=30 * procs.time_scale())
            g.close()
        f.quit()
        opened.remove(f)
        deadline = time.monotonic() + 5 * procs.time_scale()
        while True:  # its end is noticed a moment after QUIT's reply
            g = ftplib.FTP()
            try:
                g.connect("127.0.0.1", sftp_port, timeout=30 * procs.time_scale())
                break
            except ftplib.error_temp:
                g.close()
                assert time.monotonic() < deadline, "no room after a session left"
                time.sleep(0.1)
        g.login("anyone", "anything")
        opened.append(g)
        assert g.pwd() == root
        assert "too many sessions for uid %d (2, the per-user limit)" % os.getuid() in fs.stderr()
    finally:
        quit_all(opened)
        fs.stop()


def test_idle_timeout_when_the_sftp_server_never_answers(bed):
    """A reply awaited longer than --idle-timeout does not keep a session
    busy for ever: the server sits on the request (its sftp server is
    stopped here; a FIFO or a hung mount in the field), so the session
    ends, and its client is let go."""
    ssh, root, fr = own_front(bed, "sftp-stall", extra=["--idle-timeout=2"])
    try:
        f = fr.ftp()
        servers = sftp_servers(ssh)
        assert len(servers) == 1, servers
        with procs.stopped(servers):
            t0 = time.monotonic()
            f.sock.settimeout(20 * procs.time_scale())
            with pytest.raises((EOFError, OSError, ftplib.Error)):
                f.sendcmd("SIZE /")  # no reply, then the session ends
            assert 1.9 < time.monotonic() - t0 < 15 * procs.time_scale()
            assert re.search(r"the SFTP server has not answered for \d+ s; closing the session",
                             fr.fs.stderr()), fr.fs.stderr()[-2000:]
    finally:
        fr.stop()


def test_idle_timeout(bed, sshd):
    """--idle-timeout ends an SFTP front-end session too (it had none)."""
    root = bed.path("idle-root")
    os.makedirs(root, exist_ok=True)
    fr = Front(bed, sshd, root, extra=["--idle-timeout=1"])
    try:
        f = fr.ftp()
        t0 = time.monotonic()
        text = clients.unsolicited_line(f, 15)
        assert text.startswith("421 ftpssh: idle for 1 s"), text
        assert 0.9 < time.monotonic() - t0 < 10 * procs.time_scale()
        assert "idle for 1 s; closing the session" in fr.fs.stderr()
    finally:
        fr.stop()


def test_tunnel_lost_and_back(bed):
    """The SSH connection dies under a logged-in session: the client gets
    a 421, ftpssh reconnects, and the next session works."""
    ssh = bed.extra_sshd("sftp-resil")
    root = bed.path("sftp-resil-root")
    os.makedirs(root, exist_ok=True)
    fr = Front(bed, ssh, root)
    try:
        f = fr.ftp()
        assert f.pwd() == root
        ssh.kill_connections()
        tunnel_wait = time.monotonic() + 20 * procs.time_scale()
        while "sftp channel failed" not in fr.fs.stderr():
            assert time.monotonic() < tunnel_wait, fr.fs.stderr()[-3000:]
            time.sleep(0.05)
        # the session was told (an unsolicited 421) and closed
        with pytest.raises(ftplib.error_temp, match="^421.*SFTP"):
            f.sendcmd("NOOP")
        f.close()
        deadline = time.monotonic() + 30 * procs.time_scale()
        while True:
            try:
                g = fr.ftp()
                break
            except ftplib.all_errors:
                assert time.monotonic() < deadline, fr.fs.stderr()[-3000:]
                time.sleep(0.3)
        g.storbinary("STOR after", io.BytesIO(b"back"))
        assert get_file(os.path.join(root, "after")) == b"back"
        g.quit()
    finally:
        fr.stop()


@pytest.mark.parametrize("spec", ["0:sftp:relative/dir", "sftp", "a:b:sftp:/x:y"])
def test_bad_sftp_forward_is_a_usage_error(spec):
    r = subprocess.run([ftpssh.binary(), "-F", "none", "-L", spec, "127.0.0.1"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    assert r.returncode == 2, r.stderr
    assert b"bad -L" in r.stderr


def test_help_names_the_sftp_forward():
    out = subprocess.run([ftpssh.binary(), "--help"], stdout=subprocess.PIPE, timeout=30).stdout
    assert b"port:sftp[:/start/dir]" in out and b"--sftp-allow-uid" in out


def test_ipv6_loopback_epsv_and_eprt(bed, sshd, front, area):
    """`-L localhost:0:sftp:DIR` listens on ::1 too; EPSV and EPRT work
    there, PASV is refused (a 227 cannot name an IPv6 address)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    v6 = Front(bed, sshd, front.root, bind="localhost")
    try:
        f = ftplib.FTP()
        f.connect("::1", v6.port, timeout=30 * procs.time_scale())
        f.login("a", "b")
        f.cwd(area)
        data = os.urandom(123456)
        f.storbinary("STOR v6", io.BytesIO(data))  # EPSV: ftplib over IPv6
        assert sha(get_file(front.disk(area + "/v6"))) == sha(data)
        f.set_pasv(False)  # EPRT |2|::1|port|
        got = bytearray()
        f.retrbinary("RETR v6", got.extend)
        assert bytes(got) == data
        with pytest.raises(ftplib.error_temp, match="^425"):
            f.sendcmd("PASV")
        f.quit()
    finally:
        v6.stop()


def test_small_commands_and_their_refusals(front, area):
    f = front.ftp(login=False)
    with pytest.raises(ftplib.error_perm, match="^503"):
        f.sendcmd("PASS early")
    with pytest.raises(ftplib.error_perm, match="^534"):
        f.sendcmd("AUTH TLS")
    assert f.sendcmd("HELP").startswith("214")
    f.login("a", "b")
    f.cwd(area)
    assert f.sendcmd("XPWD") == '257 "%s/%s" is the current directory' % (front.root, area)
    assert f.sendcmd("XMKD q\"d").startswith('257 "%s/%s/q""d" created' % (front.root, area))
    assert os.path.isdir(front.disk(area + '/q"d'))
    assert f.sendcmd("XRMD q\"d").startswith("250")
    assert f.sendcmd("ALLO 1000").startswith("202")
    stat = f.sendcmd("STAT")
    assert stat.startswith("211") and area in stat and ("BINARY" in stat or "ASCII" in stat)
    put_file(front.disk(area + "/s"), b"12")
    st = f.sendcmd("STAT s")
    assert st.startswith("213") and st.split("\n")[1].rstrip().endswith("/%s/s" % area)
    for cmd, code in (("REST x", "501"), ("RNTO y", "503"), ("TYPE X", "504"),
                      ("STRU R", "504"), ("SITE EXEC ls", "504"), ("SITE CHMOD 999 s", "501"),
                      ("RETR s", "425"), ("EPSV 3", "522"), ("MFMT 20200101000000 s", "502")):
        with pytest.raises(ftplib.Error) as e:
            f.sendcmd(cmd)
        assert str(e.value).startswith(code), (cmd, str(e.value))
    assert f.sendcmd("NOOP").startswith("200")
    f.quit()


def test_sigterm_lets_an_sftp_transfer_finish(bed, sshd, front, area):
    """SIGTERM drains: a RETR running through the SFTP front end ends
    whole before ftpssh exits."""
    if procs.time_scale() > 1:
        pytest.skip("under FTPSSH_WRAP the transfer outlasts ftpssh's 30 s drain bound")
    path = front.disk(area + "/drain")
    data = os.urandom(24 << 20)
    put_file(path, data)
    own = Front(bed, sshd, front.root)
    out = os.path.join(bed.clientdir, "drain.bin")
    p = subprocess.Popen(["curl", "-sS", "--limit-rate", "8M", "-o", out,
                          "ftp://x:y@127.0.0.1:%d/%s/drain" % (own.port, area)],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30 * procs.time_scale()
        while not (os.path.exists(out) and os.path.getsize(out) >= (2 << 20)):
            assert time.monotonic() < deadline and p.poll() is None, "the download did not start"
            time.sleep(0.05)
        os.kill(own.fs.pid, signal.SIGTERM)
        assert p.wait(timeout=60) == 0, p.stderr.read()
        assert sha(get_file(out)) == sha(data)
        rc = own.fs.wait_exit(timeout=15)
        assert rc == 0, own.fs.stderr()[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
        own.fs.stop(check=False)
        os.unlink(out) if os.path.exists(out) else None


def test_missing_start_dir_and_no_sftp_on_the_server(bed, sshd):
    # a start directory that does not exist: 530 at PASS, with the reason
    fr = Front(bed, sshd, bed.path("no-such-dir"))
    try:
        f = fr.ftp(login=False)
        with pytest.raises(ftplib.error_perm, match="^530 ftpssh: start directory .*no-such-dir"):
            f.login("a", "b")
        f.close()
    finally:
        fr.stop()
    # a server whose account cannot run sftp: 421 naming the SFTP subsystem
    nosftp = bed.extra_sshd("sftp-none", extra_config=["ForceCommand /bin/false"])
    fr = Front(bed, nosftp, "/")
    try:
        f = fr.ftp(login=False)
        with pytest.raises(ftplib.error_temp, match="^421 ftpssh: the SFTP subsystem is not available"):
            f.login("a", "b")
        f.close()
        assert "sftp channel failed" in fr.fs.stderr()
    finally:
        fr.stop()


def test_close_right_after_a_failed_transfer(front, area):
    """Regression: a session closed while a failed transfer's SFTP handle
    is still being closed (ASan once saw the session freed under itself)."""
    for i in range(30):
        f = front.ftp()
        f.cwd(area)
        with pytest.raises(ftplib.error_perm, match="^550"):
            f.retrbinary("RETR .", lambda b: None)
        if i % 2:
            f.sock.sendall(b"QUIT\r\n")
        f.sock.close()
    assert front.fs.alive()
    front.fs.assert_clean()
    g = front.ftp()
    assert g.sendcmd("NOOP").startswith("200")
    g.quit()


def test_stor_writes_fill_whole_ssh_packets(front, area):
    """A STOR goes to the server as WRITEs of mux_sftp_write_fill() bytes,
    each exactly two of libssh2's 32700-byte packets. WRITEs of 64 KiB went
    as three, the last of ~170 bytes: 1.7 write syscalls per full packet's
    worth, now 1.24-1.28 (the rest: short packets where the server's window
    ends, and sends the socket took in part). ftpssh's write syscalls
    during the upload count the packets: it writes nothing else but a
    reply or two."""
    data = os.urandom(32 << 20)
    f = front.ftp()
    try:
        f.cwd(area)
        f.voidcmd("TYPE I")
        w0 = procs.io_count(front.fs.pid, "syscw")
        f.storbinary("STOR big.bin", io.BytesIO(data), blocksize=1 << 20)
        writes = procs.io_count(front.fs.pid, "syscw") - w0
        f.quit()
    finally:
        f.close()
    assert sha(get_file(front.disk(area + "/big.bin"))) == sha(data)
    clients.assert_upload_packets(writes, len(data), 1.45)
