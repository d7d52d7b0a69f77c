"""`make demo`: the test harness's sandbox for people.

Starts sshd and vsftpd on loopback (the same code as the integration
tests), puts a small file in the FTP home, runs ftpssh through the sshd to
the vsftpd, checks one download through it, prints what to point an FTP
client at, and stays up until Ctrl-C / SIGTERM (or DEMO_SECONDS), then
stops everything it started.
"""

import ftplib
import os
import signal
import sys
import time

from . import ftpssh, testbed

DEMO_FILE = "hello.txt"
DEMO_TEXT = b"Hello from the far side of an SSH connection.\n"


def _on_term(signum, frame):
    raise KeyboardInterrupt


def main():
    os.environ.setdefault("FTPSSH_BIN", "build/ftpssh")
    seconds = os.environ.get("DEMO_SECONDS")
    limit = float(seconds) if seconds else None
    signal.signal(signal.SIGTERM, _on_term)

    if os.geteuid() != 0:
        print("demo: run as root (it creates the FTP test user %s and runs sshd and vsftpd)"
              % testbed.FTP_USER, file=sys.stderr)
        return 1
    bed = proxy = None
    try:
        bed = testbed.Testbed(sizes={})
        ssh = bed.sshd()
        srv = bed.ftp_server("vsftpd")
        path = srv.file(DEMO_FILE)
        with open(path, "wb") as f:
            f.write(DEMO_TEXT)
        uid, gid = bed.ftp_uid_gid()
        os.chown(path, uid, gid)

        proxy = ftpssh.Ftpssh(bed, [srv])
        port = proxy.target.port

        # One download through the tunnel before telling anyone to try.
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=20)
        ftp.login(testbed.FTP_USER, testbed.FTP_PASSWORD)
        got = []
        ftp.retrbinary("RETR " + DEMO_FILE, got.append)
        ftp.quit()
        if b"".join(got) != DEMO_TEXT:
            raise RuntimeError("demo self-check: %s came back different" % DEMO_FILE)

        print("""
ftpssh demo (everything on 127.0.0.1, state in %s)
  sshd    port %d  (gateway; ftpssh logs in as %s with a generated key)
  vsftpd  port %d  (the FTP server, reached only through the SSH connection)
  ftpssh  pid %d   %s
          (its log: %s)

point your FTP client at ftp://127.0.0.1:%d/ (passive mode)
  user: %s    password: %s

try:  curl -u %s:%s ftp://127.0.0.1:%d/%s
%s""" % (bed.dir, ssh.port, ssh.login, srv.port, proxy.pid, " ".join(proxy.argv), proxy.daemon.stderr_path,
         port, testbed.FTP_USER, testbed.FTP_PASSWORD,
         testbed.FTP_USER, testbed.FTP_PASSWORD, port, DEMO_FILE,
         "stopping by itself in %gs" % limit if limit else "Ctrl-C stops it all."), flush=True)

        deadline = time.monotonic() + limit if limit else None
        while deadline is None or time.monotonic() < deadline:
            if not proxy.alive():
                print("demo: ftpssh exited:\n" + proxy.describe(), file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except Exception as e:  # a clear message, then the cleanup below
        print("demo: %s" % e, file=sys.stderr)
        return 1
    finally:
        print("demo: stopping", file=sys.stderr)
        if proxy is not None:
            proxy.stop(check=False)
        if bed is not None:
            bed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
