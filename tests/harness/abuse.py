"""Misbehaving FTP clients, and what a process holds, read from /proc.

Each op_* function is one whole client session against a target (a
harness Target or anything with .host and .port) that misbehaves in one
way and then checks that the session (or a fresh one) still works. They
raise AssertionError (or an ftplib/OS error) on anything unexpected, and
every socket operation in them has a timeout, so they can run by the
hundred from a thread pool (test_leaks.py) as well as one by one
(test_hostile.py).
"""

import ftplib
import hashlib
import os
import socket
import sys
import threading
import time

from . import procs
from .clients import TracingFTP
from .testbed import FTP_PASSWORD, FTP_USER

OP_TIMEOUT = 20.0
SECOND_WAIT = 2.0


def timeout():
    return OP_TIMEOUT * procs.time_scale()


# --- the process under test, from /proc ------------------------------------

def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fd_table(pid):
    """{fd: link target} of a process, for a readable diff."""
    out = {}
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            out[int(fd)] = os.readlink(os.path.join(d, fd))
        except OSError:
            pass
    return out


def vm_rss_kib(pid):
    return procs.status_kib(pid, "VmRSS")


def _proc_addr(hexaddr):
    """'0100007F:1F90' from /proc/net/tcp{,6} as ('127.0.0.1', 8080): the
    address is in 32-bit words of host byte order."""
    addr, port = hexaddr.split(":")
    raw = bytes.fromhex(addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) \
        if sys.byteorder == "little" else raw
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def listening_sockets(pid):
    """{inode: (address, port)} of the TCP sockets process PID has in
    LISTEN state, IPv4 and IPv6: only its own, whoever else listens."""
    inodes = procs.socket_inodes(pid)
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:
                        out[fields[9]] = _proc_addr(fields[1])
        except OSError:
            pass
    return out


def listening_ports(pid):
    """Local TCP ports that process PID has in LISTEN state."""
    return {port for _, port in listening_sockets(pid).values()}


def wait_until(pred, limit, step=0.05):
    """Poll PRED until true or LIMIT seconds passed; its last value."""
    deadline = time.monotonic() + limit
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def connect_refused(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


# --- FTP helpers -------------------------------------------------------------

def login(target, user=FTP_USER, password=FTP_PASSWORD, epsv=False, trust=True):
    """A logged-in TracingFTP. trust: use the address in the 227 (so a
    wrongly rewritten one fails instead of going unnoticed)."""
    ftp = TracingFTP(timeout=timeout(), epsv=epsv)
    ftp.trust_server_pasv_ipv4_address = trust
    ftp.connect(target.host, target.port)
    ftp.login(user, password)
    return ftp


def read_reply(ftp):
    """One whole reply (multi-line included) without ftplib's code checks."""
    return ftp.getmultiline()


def drain(conn, limit=None):
    """Read a data connection to EOF (or LIMIT bytes, or for at most twice
    the op timeout); sha256 and length."""
    h = hashlib.sha256()
    n = 0
    deadline = time.monotonic() + 2 * timeout()
    while (limit is None or n < limit) and time.monotonic() < deadline:
        b = conn.recv(1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
    return h.hexdigest(), n


def pasv(ftp):
    """Send PASV, return (host, port) of the 227 without connecting."""
    return ftplib.parse227(ftp.sendcmd("PASV"))


def retr_check(ftp, name, sha256, size):
    h = hashlib.sha256()
    n = [0]

    def got(b):
        h.update(b)
        n[0] += len(b)
    ftp.retrbinary("RETR " + name, got, blocksize=1 << 16)
    assert (n[0], h.hexdigest()) == (size, sha256), "RETR %s: got %d bytes (sha %s), want %d (%s)\n%s" % (
        name, n[0], h.hexdigest()[:16], size, sha256[:16], ftp.transcript()[-1500:])


def noop_ok(ftp):
    r = ftp.sendcmd("NOOP")
    assert r.startswith("200"), "NOOP: %r\n%s" % (r, ftp.transcript()[-1500:])


def hard_close(sock):
    """Close with RST (SO_LINGER 0): a client that vanishes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


# --- one misbehaving session each --------------------------------------------

def op_normal(target, f):
    """Login, RETR of file F (a testbed DataFile-like: name, size, sha256), QUIT."""
    ftp = login(target)
    try:
        retr_check(ftp, f.name, f.sha256, f.size)
        ftp.quit()
    finally:
        ftp.close()


def op_disconnect_mid_retr(target, big, read=1 << 20, rst=False):
    """Start a RETR of a big file, read READ bytes, then drop both the data
    and the control connection without a word (RST with rst=True)."""
    ftp = login(target)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR " + big)
    conn.settimeout(timeout())
    _, n = drain(conn, read)
    assert n >= read, "RETR %s ended after %d bytes" % (big, n)
    if rst:
        hard_close(conn)
        hard_close(ftp.sock)
        ftp.sock = None
        ftp.file = None
    else:
        conn.close()
    ftp.close()


def op_never_connect(target, replace=True):
    """PASV without connecting to the port; with replace, a second PASV
    (which must retire the first port at once). The session goes on:
    NOOP, QUIT. Returns the offered ports."""
    ftp = login(target)
    try:
        ports = [pasv(ftp)[1]]
        if replace:
            ports.append(pasv(ftp)[1])
        noop_ok(ftp)
        ftp.quit()
    finally:
        ftp.close()
    return ports


def op_connect_twice(target, f):
    """Connect twice to one offered data port; the first connection must
    carry the RETR intact, the second no byte at all. Returns how the
    second one ended: "refused" (refused or reset while connecting; the
    usual case when ftpssh has already closed the port), "closed" (it got
    into the kernel's accept queue before the port closed, then EOF or
    RST), or "silent" (connected, then neither data nor close within
    SECOND_WAIT s: a handshake still half-done in the kernel when the
    listener closed is dropped without a RST; ftpssh holds nothing for it),
    and the port."""
    ftp = login(target)
    try:
        ftp.voidcmd("TYPE I")
        host, port = pasv(ftp)
        c1 = socket.create_connection((host, port), timeout=timeout())
        c2 = None
        second = "refused"
        try:
            try:
                c2 = socket.create_connection((host, port), timeout=timeout())
            except (ConnectionRefusedError, ConnectionResetError):
                c2 = None
            r = ftp.sendcmd("RETR " + f.name)
            assert r[:1] == "1", "RETR: %r" % r
            sha, n = drain(c1)
            c1.close()
            ftp.voidresp()
            assert (n, sha) == (f.size, f.sha256), "first data connection: %d bytes, want %d" % (n, f.size)
            if c2 is not None:
                c2.settimeout(SECOND_WAIT)
                try:
                    extra = c2.recv(1 << 16)
                    second = "closed"
                except ConnectionResetError:
                    extra = b""
                    second = "closed"
                except (socket.timeout, TimeoutError):
                    extra = b""
                    second = "silent"
                assert extra == b"", "the second data connection got %d bytes" % len(extra)
        finally:
            c1.close()
            if c2 is not None:
                c2.close()
        noop_ok(ftp)
        ftp.quit()
    finally:
        ftp.close()
    return second, port


ABOR_IN_BAND = b"\xff\xf4\xff\xf2ABOR\r\n"  # IAC IP, IAC DM, ABOR (RFC 959 4.1.3), no urgent data
ABOR_WAIT = 5.0


def op_abor_retr(target, big, close_first=True, oob=True, read=1 << 20):
    """ABOR during a RETR of a big file. oob: ftplib's abort(), which sends
    "ABOR\r\n" with MSG_OOB (its last byte is TCP urgent data); otherwise
    IAC IP, IAC DM, ABOR all in band. close_first: drop the data connection
    first, then ABOR (what curl and lftp do); otherwise ABOR with the data
    connection open and drained to its end meanwhile (a server reading its
    control connection only between transfers answers then). Either way
    the dialogue must then be in step: the RETR's and the ABOR's replies,
    then NOOP's 200, each within ABOR_WAIT seconds."""
    ftp = login(target)
    try:
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("RETR " + big)
        conn.settimeout(timeout())
        _, n = drain(conn, read)
        assert n >= read
        t = None
        if close_first:
            conn.close()
        else:
            t = threading.Thread(target=drain, args=(conn,), daemon=True)
            t.start()
        # With the data connection open the server may send the whole file
        # first: allow for that too.
        ftp.sock.settimeout((ABOR_WAIT + (0 if close_first else 10)) * procs.time_scale())
        replies = []
        try:
            if oob:
                replies.append(ftp.abort())
            else:
                ftp.sock.sendall(ABOR_IN_BAND)
                replies.append(read_reply(ftp))
            if t is not None:
                t.join(timeout())
            conn.close()
            # The server answers the RETR (426, or 226 if it had finished)
            # and the ABOR (225 or 226), in that order; abort() read the
            # first. Then NOOP's 200 shows the dialogue is in step.
            ftp.sock.settimeout(ABOR_WAIT * procs.time_scale())
            ftp.putcmd("NOOP")
            for _ in range(3):
                replies.append(read_reply(ftp))
                if replies[-1].startswith("200"):
                    break
        except (socket.timeout, TimeoutError):
            raise AssertionError("ABOR (%s): replies %r, then nothing for %.0fs:\n%s" % (
                "ftplib abort(), MSG_OOB" if oob else "in band", replies, ABOR_WAIT,
                ftp.transcript()[-1500:]))
        codes = [r[:3] for r in replies]
        ok = (len(codes) == 3 and codes[0] in ("426", "226") and codes[1] in ("225", "226")
              and codes[2] == "200")
        assert ok, "ABOR during RETR: replies %r, want [426|226, 225|226, 200]\n%s" % (
            replies, ftp.transcript()[-1500:])
        ftp.sock.settimeout(timeout())
        ftp.quit()
    finally:
        ftp.close()
    return replies


def op_long_client_line(target, f=None, size=64 << 10):
    """SIZE bytes without a newline: ftpssh answers 500 on its own; the line
    is then ended and the session works (NOOP; a RETR of F if given)."""
    ftp = login(target)
    try:
        ftp.sock.sendall(b"A" * size)
        r = read_reply(ftp)
        assert r.startswith("500") and "ftpssh" in r, "64 KiB line: %r" % r
        ftp.sock.sendall(b"\r\n")
        noop_ok(ftp)
        if f is not None:
            retr_check(ftp, f.name, f.sha256, f.size)
        ftp.quit()
    finally:
        ftp.close()
    return r
