"""Living with ftpssh (issue 7): what the person running it sees and sets.

- logs: one "ftpssh: " line per event with a session id at the default
  level (session, transfer with command, size and rate); -q only errors;
  -v session ends; -vv traces the control stream with PASS masked, and
  the password never appears anywhere;
- status: the SIGUSR1 table and the --status-file name the live session
  (user, LAST COMMAND) and the running transfer; the terminal status line
  (ftpssh run inside tmux, captured with `tmux capture-pane`; the capture
  is kept in build/status-line.txt);
- config files: --config FILE, ~/.config/ftpssh/config, --config none; the command
  line wins (its -L replaces the config's forwards; its --data-timeout,
  -p, -o Port and user@ beat the config's); a config-only setting takes
  effect; a malformed line is an error naming FILE:LINE, exit 2; config
  strings are freed at exit;
- install: `make install DESTDIR=...` puts the binary, ftpssh(1), the
  systemd unit and the example env file in place, `man -l` renders the
  installed page without a warning, `make uninstall` removes them all;
  `systemd-analyze verify` accepts the unit when it is available.

Every ftpssh here gets `--config none` unless the test is about config files,
so a machine's /etc/ftpssh.conf cannot change what is tested.
"""

import ftplib
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness import clients, ftpssh, procs, testbed
from harness.testbed import REPO

KIND = "pyftpdlib"
# A sparse file much larger than every buffer between the FTP server and
# a client that stops reading (SSH window, socket buffers, pump buffers),
# so a transfer of it stays "running" for as long as the test wants.
BIG = "living-sparse-256M"
BIG_SIZE = 256 << 20
STATUS_FILE_WAIT = 8.0   # the file is rewritten every 2 s
LOG_WAIT = 10.0

STATUS_HEAD = re.compile(r"^status: ssh (up|connecting|down, reconnecting), (\d+) session\(s\), "
                         r"(\d+) transfer\(s\) running, (\d+) finished, (.+) moved$")
SESSION_HEAD = ["SESSION", "USER", "CLIENT", "UID", "AGE", "LAST", "COMMAND"]
XFER_HEAD = ["TRANSFER", "COMMAND", "BYTES", "MB/s", "AGE"]
XFER_ROW = re.compile(r"^(#\d+\.\d+)\s+(.*?)\s+(\d+)\s+(\d+\.\d)\s+(\d+\.\d)s$")


# --- helpers ----------------------------------------------------------------

def wait_for(fn, timeout, what):
    """Poll fn() until it returns something true; that value."""
    deadline = time.monotonic() + timeout * procs.time_scale()
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0fs" % (what, timeout))
        time.sleep(0.1)


def start(bed, *extra, config=None, wait=True):
    """An ftpssh of the test's own in front of pyftpdlib."""
    args = ["--config", config if config else "none"] + list(extra)
    return ftpssh.Ftpssh(bed, [bed.ftp_server(KIND)], extra=args, wait=wait)


def body(text):
    """The log text of ftpssh without its 'ftpssh: ' prefixes; asserts
    that every line has one."""
    out = []
    for line in text.splitlines():
        assert line.startswith("ftpssh: "), "a log line without the 'ftpssh: ' prefix: %r\n%s" % (
            line, text)
        out.append(line[len("ftpssh: "):])
    return out


def parse_table(lines):
    """The status table (SIGUSR1 or --status-file) as (head match,
    sessions, transfers); sessions are dicts id/user/client/uid/age/last,
    transfers dicts id/command/bytes/rate/age. Asserts the layout."""
    assert lines, "empty status table"
    head = STATUS_HEAD.match(lines[0])
    assert head, "status table's first line %r does not read 'status: ssh ..., N session(s), ...'" % lines[0]
    assert lines[1].split() == SESSION_HEAD, "session header is %r" % lines[1]
    sessions, i = [], 2
    while i < len(lines) and lines[i].split() != XFER_HEAD:
        f = lines[i].split(None, 5)
        assert len(f) == 6 and re.match(r"^#\d+$", f[0]) and re.match(r"^\d+s$", f[4]), (
            "bad session row %r" % lines[i])
        sessions.append(dict(id=f[0], user=f[1], client=f[2], uid=f[3], age=f[4], last=f[5]))
        i += 1
    assert i < len(lines), "no TRANSFER header in the status table:\n%s" % "\n".join(lines)
    xfers = []
    for line in lines[i + 1:]:
        m = XFER_ROW.match(line)
        assert m, "bad transfer row %r" % line
        xfers.append(dict(id=m.group(1), command=m.group(2), bytes=int(m.group(3)),
                          rate=float(m.group(4)), age=float(m.group(5))))
    assert int(head.group(2)) == len(sessions), "header counts %s sessions, rows %d" % (
        head.group(2), len(sessions))
    assert int(head.group(3)) == len(xfers), "header counts %s transfers, rows %d" % (
        head.group(3), len(xfers))
    return head, sessions, xfers


def sigusr1_table(run, after):
    """Send SIGUSR1; the table ftpssh logs in answer (after offset AFTER
    of its stderr), as lines without the prefix."""
    os.kill(run.pid, signal.SIGUSR1)

    def table():
        lines = body(run.stderr()[after:])
        starts = [i for i, l in enumerate(lines) if l.startswith("status: ")]
        if not starts:
            return None
        rest = lines[starts[0]:]
        # the table ends where the next non-table line (if any) starts
        end = len(rest)
        for j, l in enumerate(rest[1:], 1):
            if not (l.split()[:1] and (l.split() == SESSION_HEAD or l.split() == XFER_HEAD
                                        or re.match(r"^#\d+(\.\d+)?\s", l))):
                end = j
                break
        if XFER_HEAD not in [l.split() for l in rest[:end]]:
            return None
        return rest[:end]
    return wait_for(table, LOG_WAIT, "the SIGUSR1 table in ftpssh's log")


@pytest.fixture(scope="module")
def big(bed):
    """BIG on the FTP server, sparse (no disk, no time to make)."""
    srv = bed.ftp_server(KIND)
    path = srv.file(BIG)
    with open(path, "wb") as f:
        f.truncate(BIG_SIZE)
    os.chmod(path, 0o444)
    yield BIG
    try:
        os.unlink(path)
    except OSError:
        pass


class HeldTransfer:
    """A logged-in ftplib session with a RETR of BIG started and its data
    connection not read: ftpssh has one session and one running transfer
    until close()."""

    def __init__(self, target):
        self.ftp = clients.open_ftplib(target)
        self.conn = self.ftp.transfercmd("RETR " + BIG)
        self.conn.settimeout(clients.timeout())
        assert self.conn.recv(4096), "no data from RETR %s" % BIG

    def close(self):
        for c in (self.conn, self.ftp):
            try:
                c.close()
            except OSError:
                pass


# --- logs -------------------------------------------------------------------

SESSION_LINE = re.compile(r"^\[#(\d+)\] FTP client 127\.0\.0\.1:\d+ \(uid %d\) -> 127\.0\.0\.1:(\d+)$"
                          % os.getuid())
RETR_LINE = r"^\[#%s\.\d+\] RETR data-1M: 1\.0 MiB from server in \d+\.\d\d s, \d+\.\d MB/s$"
STOR_LINE = r"^\[#%s\.\d+\] STOR %s: 1 B to server in \d+\.\d\d s, \d+\.\d MB/s$"
WRONG_PASSWORD = "Wr0ng-pa55-never-logged"

# level -> (line patterns that must be there, ones that must not)
LEVELS = {
    "-q": ([], [r"\[#", r"SSH connection .* is up"]),
    "default": ([r"^SSH connection to \S+@127\.0\.0\.1 port \d+ is up$", "SESSION", "RETR", "STOR"],
                [r"session from .* (?:closed normally|failed) after", r"\] -> ", r"PASS"]),
    "-v": (["SESSION", "RETR", "STOR", r"^\[#\d+\] session from 127\.0\.0\.1:\d+ closed normally "
            r"after \d+\.\d s: "], [r"\] -> ", r"PASS", r"session from .* failed after"]),
    "-vv": (["SESSION", "RETR", "STOR", r"^\[#\d+\] -> USER %s$" % testbed.FTP_USER,
             r"^\[#\d+\] -> PASS \*\*\*\*$", r"^\[#\d+\] <- 230", r"^\[#\d+\] <- 530",
             r"^\[#\d+\] <- 227 "], []),
}


@pytest.mark.ftpssh_only
@pytest.mark.parametrize("level", list(LEVELS))
def test_log_levels(bed, scratch, level):
    """A failed login, a login, a RETR and a STOR at each log level."""
    run = start(bed, *([] if level == "default" else [level]))
    try:
        bad = clients.open_ftplib(run.target, login=False)
        with pytest.raises(ftplib.error_perm):
            bad.login(testbed.FTP_USER, WRONG_PASSWORD)
        bad.close()
        ftp = clients.open_ftplib(run.target)
        ftp.retrbinary("RETR data-1M", lambda b: None)
        name = clients.upload_name("living")
        scratch.append(bed.ftp_server(KIND).file(name))
        ftp.storbinary("STOR " + name, io.BytesIO(b"x"))
        ftp.quit()
        must, must_not = LEVELS[level]
        if level != "-q":
            # transfer lines come when the pump ends, just after the 226
            wait_for(lambda: re.search(r"\] STOR %s: " % name, run.stderr()), LOG_WAIT,
                     "the STOR line in ftpssh's log")
        if level in ("-v", "-vv"):
            wait_for(lambda: len(re.findall(r"session from .* (?:closed normally|failed) after",
                                            run.stderr())) >= 2,
                     LOG_WAIT, "two 'session ... closed normally' lines")
        else:
            time.sleep(0.5)  # whatever would come, let it come
        run.assert_alive()
        text = run.stderr()
        lines = body(text)
        assert "\033[K" not in text and "\r" not in text, (
            "a terminal status line on stderr that is not a terminal:\n%r" % text)
        assert WRONG_PASSWORD not in text and testbed.FTP_PASSWORD not in text, (
            "a password reached the log at %s:\n%s" % (level, text))
        # the announcement is printed at every level
        assert [l for l in lines if l.startswith("point your FTP client at ftp://127.0.0.1:")], text
        sids = [SESSION_LINE.match(l).group(1) for l in lines if SESSION_LINE.match(l)]
        for pat in must:
            if pat == "SESSION":
                assert len(sids) == 2, "expected two '[#N] FTP client ... (uid %d) -> ...' lines at %s:\n%s" % (
                    os.getuid(), level, text)
                continue
            if pat == "RETR":
                pat = RETR_LINE % sids[1]
            elif pat == "STOR":
                pat = STOR_LINE % (sids[1], re.escape(name))
            assert [l for l in lines if re.search(pat, l)], "no log line matching %r at %s:\n%s" % (
                pat, level, text)
        for pat in must_not:
            bad_lines = [l for l in lines if re.search(pat, l)]
            assert not bad_lines, "at %s the log has %r:\n%s" % (level, bad_lines, text)
        if level == "-q":
            assert len(lines) == 1, "-q logs more than the announcement:\n%s" % text
    finally:
        run.stop(check=True)


# --- status: SIGUSR1 and --status-file --------------------------------------

@pytest.mark.ftpssh_only
def test_sigusr1_table_names_live_session(bed, big):
    run = start(bed)
    held = None
    try:
        held = HeldTransfer(run.target)
        _, sessions, xfers = parse_table(sigusr1_table(run, len(run.stderr())))
        assert len(sessions) == 1, sessions
        s = sessions[0]
        assert s["user"] == testbed.FTP_USER and s["last"] == "RETR " + BIG, (
            "the session row %r does not name user %s and LAST COMMAND 'RETR %s'"
            % (s, testbed.FTP_USER, BIG))
        assert s["uid"] == str(os.getuid()) and s["client"].startswith("127.0.0.1:"), s
        assert len(xfers) == 1, xfers
        x = xfers[0]
        assert x["id"].startswith(s["id"] + ".") and x["command"] == "RETR " + BIG, (
            "transfer row %r does not belong to session %s or names the wrong command" % (x, s["id"]))
        assert 0 < x["bytes"] < BIG_SIZE, x
        held.close()
        held = None
        # The aborted transfer is logged as ended, the table then empty of it.
        wait_for(lambda: re.search(r"\[%s\] RETR %s: ended after " % (re.escape(x["id"]), BIG),
                                   run.stderr()),
                 LOG_WAIT, "the aborted transfer's log line")
        head, _, xfers = parse_table(sigusr1_table(run, len(run.stderr())))
        assert not xfers and head.group(4) == "1", head.group(0)
    finally:
        if held:
            held.close()
        run.stop(check=True)


@pytest.mark.ftpssh_only
def test_status_file(bed, tmp_path):
    path = str(tmp_path / "ftpssh.status")
    run = start(bed, "--status-file=" + path)
    ftp = None

    def table(pred):
        def read():
            try:
                with open(path) as f:
                    t = parse_table(f.read().splitlines())
            except FileNotFoundError:
                return None
            return t if pred(t) else None
        return read
    try:
        ftp = clients.open_ftplib(run.target)
        head, sessions, _ = wait_for(table(lambda t: t[1] and t[1][0]["last"] == "PASS ****"),
                                     STATUS_FILE_WAIT, "a status file naming the logged-in session")
        s = sessions[0]
        assert s["user"] == testbed.FTP_USER and s["uid"] == str(os.getuid()), s
        assert head.group(1) == "up", head.group(0)
        ftp.retrbinary("RETR data-1M", lambda b: None)
        head, sessions, _ = wait_for(table(lambda t: t[0].group(4) == "1"), STATUS_FILE_WAIT,
                                     "a status file counting the finished RETR")
        assert sessions[0]["last"] == "RETR data-1M", sessions
        assert head.group(5) == "1.0 MiB", head.group(0)
        ftp.quit()
        ftp = None
        wait_for(table(lambda t: not t[1]), STATUS_FILE_WAIT, "a status file without the session")
        with open(path) as f:
            assert testbed.FTP_PASSWORD not in f.read()
    finally:
        if ftp:
            ftp.close()
        run.stop(check=True)
    assert not os.path.exists(path + ".tmp"), "the status file's temporary copy was left behind"


# --- config files -----------------------------------------------------------

def write_config(dirpath, text, name="ftpssh.conf"):
    path = os.path.join(str(dirpath), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.mark.ftpssh_only
def test_config_only_setting_and_command_line_forward(bed, tmp_path):
    """The config's forward is replaced by the command line's -L; its
    data-timeout and verbose, which the command line does not give, take
    effect: an unused one-shot data port closes after 2 s."""
    # The config's port is held (bound, never listening) for the whole
    # test, not picked and closed: ftpssh's own bind(0) for its -L could
    # draw a closed port's number again (CI saw it once). Held, no one else
    # can take it, connects to it are refused, and an ftpssh that wrongly
    # opened the config's forward would fail to bind it: "cannot listen".
    with procs.reserve_port() as hold:
        unused = hold.port
        cfg = write_config(tmp_path, "\n".join([
            "# the command line's -L replaces this",
            "forward 127.0.0.1:%d:127.0.0.1:9" % unused,
            "window-max 65536   # small, and still works",
            "data-timeout 2",
            "verbose",
            "",
        ]))
        run = start(bed, config=cfg)
        try:
            assert run.ports != [unused] and "cannot listen" not in run.stderr(), (
                "ftpssh tried the config's forward (port %d) although the command line gave -L:\n%s"
                % (unused, run.stderr()))
            ftp = clients.open_ftplib(run.target)
            assert testbed.BANNER[KIND] in ftp.getwelcome(), ftp.getwelcome()
            h = []
            ftp.retrbinary("RETR data-1M", h.append)
            assert sum(map(len, h)) == 1 << 20
            host, port = ftplib.parse227(ftp.sendcmd("PASV"))
            wait_for(lambda: re.search(r"\] no data connection within 2 s; port closed", run.stderr()),
                     6, "'no data connection within 2 s' (config data-timeout 2, verbose)")
            with pytest.raises(OSError):
                socket.create_connection((host, port), timeout=2).close()
            ftp.quit()
        finally:
            run.stop(check=True)


@pytest.mark.ftpssh_only
def test_command_line_beats_config(bed, tmp_path):
    """data-timeout 1 in the config, --data-timeout 30 on the command
    line: the port is still open after 2 s."""
    cfg = write_config(tmp_path, "data-timeout 1\nverbose\n")
    run = start(bed, "--data-timeout", "30", config=cfg)
    try:
        ftp = clients.open_ftplib(run.target)
        host, port = ftplib.parse227(ftp.sendcmd("PASV"))
        time.sleep(2.0)
        assert "no data connection within" not in run.stderr(), run.stderr()
        socket.create_connection((host, port), timeout=5).close()
        ftp.quit()
    finally:
        run.stop(check=True)


def run_cli(args, home, leaks=False, timeout=20):
    """ftpssh ARGS with HOME=home; (exit status, stderr). Without leaks the
    leak check is off and no FTPSSH_WRAP is used: the exit status is what
    these tests look at (LeakSanitizer would turn it into 1)."""
    env = dict(os.environ, HOME=str(home))
    env.pop("SSH_AUTH_SOCK", None)
    env["ASAN_OPTIONS"] = "detect_leaks=%d:abort_on_error=0" % (1 if leaks else 0)
    argv = (ftpssh.wrap() if leaks else []) + [ftpssh.binary()] + args
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout * procs.time_scale())
    return r.returncode, r.stderr.decode("utf-8", "replace")


@pytest.mark.ftpssh_only
def test_config_strings_freed_at_exit(tmp_path):
    """Values read from a config file are kept for the whole run, and
    freed at exit: no leak report (LeakSanitizer, or valgrind)."""
    cfg = write_config(tmp_path, "data-timeout 5\nforward 2121:localhost:21\n")
    rc, err = run_cli(["--config", cfg, "-V"], tmp_path, leaks=True)
    m = ftpssh.SANITIZER.search(err)
    assert rc == 0 and not m, "ftpssh --config CONFIG -V: exit %d\n%s" % (rc, err)


BAD_LINES = [
    "no-such-key 1",
    "data-timeout soon",
    "forward 2121",
    "StrictHostKeyChecking maybe",
    "window-max 12",
    "ServerAliveCountMax 0",
    "data-host elsewhere",
    "help",
]


@pytest.mark.ftpssh_only
@pytest.mark.parametrize("line", BAD_LINES)
def test_config_bad_line_exit_2(tmp_path, line):
    cfg = write_config(tmp_path, "# comment\nServerAliveInterval 10\n%s\nverbose\n" % line)
    rc, err = run_cli(["--config", cfg, "nobody@127.0.0.1"], tmp_path)
    key, _, val = line.partition(" ")
    want = "ftpssh: %s:3: bad line: %s %s\n" % (cfg, key, val)
    assert rc == 2 and want in err, "rc %d, stderr %r; wanted exit 2 and %r" % (rc, err, want)


@pytest.mark.ftpssh_only
def test_user_config_from_home_and_f_none(tmp_path):
    """~/.config/ftpssh/config is read (HOME), and --config none reads nothing."""
    if os.path.exists("/etc/ftpssh.conf"):
        pytest.skip("/etc/ftpssh.conf exists on this machine and is read first")
    cfg = write_config(tmp_path, "gateway\n", name=".config/ftpssh/config")
    rc, err = run_cli(["nobody@127.0.0.1"], tmp_path)
    assert rc == 2 and "ftpssh: %s:1: bad line: gateway" % cfg in err, (rc, err)
    rc, err = run_cli(["--config", "none", "-q"], tmp_path)
    assert rc == 2 and "missing gateway" in err and "bad line" not in err, (rc, err)
    rc, err = run_cli(["--config", str(tmp_path / "absent.conf"), "nobody@127.0.0.1"], tmp_path)
    assert rc == 2 and "ftpssh: cannot read config %s: No such file or directory" % (
        tmp_path / "absent.conf") in err, (rc, err)


@pytest.mark.ftpssh_only
def test_command_line_port_beats_config(bed, tmp_path):
    """`port 1` in the config, -p SSHPORT on the command line: -p wins."""
    cfg = write_config(tmp_path, "port 1\n")
    run = start(bed, config=cfg)
    run.stop(check=True)


@pytest.mark.ftpssh_only
def test_command_line_user_beats_config_login(bed, tmp_path):
    """`login` in the config, user@gateway on the command line: the
    command line's user logs in (as ssh does with User in ssh_config)."""
    cfg = write_config(tmp_path, "login nosuchuser\n")
    run = start(bed, config=cfg, wait=False)
    try:
        run.wait_ready()
    finally:
        run.stop(check=True)


@pytest.mark.ftpssh_only
def test_command_line_o_port_beats_config(tmp_path):
    """`port` in the config, -o Port=N on the command line: N is dialled."""
    cfg_port, cli_port = procs.free_port(), procs.free_port()
    cfg = write_config(tmp_path, "port %d\n" % cfg_port)
    rc, err = run_cli(["--config", cfg, "-o", "Port=%d" % cli_port, "nobody@127.0.0.1"], tmp_path)
    assert rc == 3 and "cannot connect to 127.0.0.1 port %d:" % cli_port in err, (rc, err)


# --- install, man page, systemd unit ---------------------------------------

INSTALLED = [
    "bin/ftpssh",
    "share/man/man1/ftpssh.1",
    "lib/systemd/system/ftpssh@.service",
    "share/doc/ftpssh/ftpssh.env.example",
    "share/doc/ftpssh/USAGE.md",
    "share/doc/ftpssh/TROUBLESHOOTING.md",
]


def make(*args):
    # not the jobserver of a `make check` this may run under
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "--no-print-directory", "-C", REPO] + list(args), env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, "make %s failed:\n%s" % (" ".join(args), out)
    return out


def man_warnings(page):
    """What man and groff say about PAGE on stderr (warnings), and the
    rendered text."""
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1")
    env.pop("MANPAGER", None)
    env.pop("PAGER", None)
    r = subprocess.run(["man", "--warnings", "-l", page], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    text = r.stdout.decode("utf-8", "replace")
    warn = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, "man -l %s failed (%d): %s" % (page, r.returncode, warn)
    if shutil.which("groff"):
        g = subprocess.run(["groff", "-mandoc", "-ww", "-z", page], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        warn += g.stderr.decode("utf-8", "replace")
    return text, warn


def test_make_install_and_uninstall(tmp_path):
    dest = str(tmp_path / "dest")
    make("install", "PREFIX=/usr/local", "DESTDIR=" + dest)
    root = os.path.join(dest, "usr/local")
    for rel in INSTALLED:
        assert os.path.isfile(os.path.join(root, rel)), "make install did not install %s" % rel
    assert os.access(os.path.join(root, "bin/ftpssh"), os.X_OK)
    with open(os.path.join(root, "lib/systemd/system/ftpssh@.service")) as f:
        unit = f.read()
    assert re.search(r"^ExecStart=/usr/local/bin/ftpssh ", unit, re.M), (
        "the installed unit does not run $(BINDIR)/ftpssh:\n%s" % unit)
    for line in ("AmbientCapabilities=CAP_NET_BIND_SERVICE", "User=ftpssh",
                 "EnvironmentFile=/etc/ftpssh/%i.env", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict"):
        assert re.search(r"^%s$" % re.escape(line), unit, re.M), "the unit lacks %s" % line
    make("uninstall", "PREFIX=/usr/local", "DESTDIR=" + dest)
    left = [os.path.join(d, f)[len(dest):] for d, _, fs in os.walk(dest) for f in fs]
    assert not left, "make uninstall left %s" % left


def help_options(binary):
    """Every option `ftpssh --help` names: -X, --long, and -o Keys."""
    r = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, timeout=10)
    assert r.returncode == 0
    text = r.stdout.decode()
    opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-[A-Za-z])\b", text))
    opts |= set(re.findall(r"-o ([A-Z][A-Za-z]+)=", text))
    assert {"-L", "--window-max", "UserKnownHostsFile"} <= opts, opts
    return sorted(opts)


def test_installed_man_page_renders(tmp_path):
    if not shutil.which("man"):
        pytest.skip("man (package man-db) is not installed: ftpssh(1) rendering is not checked")
    dest = str(tmp_path / "dest")
    make("install", "PREFIX=/usr/local", "DESTDIR=" + dest)
    root = os.path.join(dest, "usr/local")
    text, warn = man_warnings(os.path.join(root, "share/man/man1/ftpssh.1"))
    assert not warn.strip(), "the installed ftpssh(1) renders with warnings:\n%s" % warn
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "CONFIGURATION FILES", "EXIT STATUS",
                    "FILES", "ENVIRONMENT", "EXAMPLES"):
        assert re.search(r"^%s$" % section, text, re.M), "ftpssh(1) has no %s section" % section
    # every option of --help, the files and the variables are in the page
    flat = re.sub(r"[\u2010\u2011\u2212]", "-", text)  # groff may print hyphens as U+2010
    flat = re.sub(r"\s+", " ", flat)
    for opt in help_options(os.path.join(root, "bin/ftpssh")) + [
            "SSH_AUTH_SOCK", "HOME", "/etc/ftpssh.conf", "~/.config/ftpssh/config",
            "libssh2 1.10", "--no-uid-check", "EXIT STATUS"]:
        assert opt in flat, "ftpssh(1) does not mention %s" % opt
    for code in range(7):
        assert re.search(r"EXIT STATUS.* %d [A-Z]" % code, flat), "exit status %d undocumented" % code
    make("uninstall", "PREFIX=/usr/local", "DESTDIR=" + dest)


def test_systemd_unit_verifies(tmp_path):
    sa = shutil.which("systemd-analyze")
    if not sa:
        pytest.skip("systemd-analyze is not installed (package systemd): the unit is not verified")
    # Installed under a prefix of its own, so that ExecStart names a binary
    # that exists (verify checks it); the man page is found through MANPATH.
    prefix = str(tmp_path / "usr")
    make("install", "PREFIX=" + prefix, "DESTDIR=")
    unit = os.path.join(prefix, "lib/systemd/system/ftpssh@.service")
    env = dict(os.environ, MANPATH=os.path.join(prefix, "share/man") + ":",
               SYSTEMD_LOG_COLOR="0")
    r = subprocess.run([sa, "verify", unit], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    make("uninstall", "PREFIX=" + prefix, "DESTDIR=")
    # On a running system, verify also loads the units ours depends on and
    # may complain about those: only what concerns ftpssh counts.
    ours = [l for l in out.splitlines() if "ftpssh" in l]
    assert not ours, "systemd-analyze verify %s:\n%s" % (unit, out)
    assert r.returncode == 0 or out.strip(), "systemd-analyze verify failed silently"


# --- the terminal status line ----------------------------------------------

@pytest.mark.ftpssh_only
@pytest.mark.timeout(60)
def test_terminal_status_line_in_tmux(bed, big):
    tmux = shutil.which("tmux")
    if not tmux:
        pytest.skip("tmux is not installed: the terminal status line is not checked")
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    ssh = bed.sshd()
    srv = bed.ftp_server(KIND)
    sock = os.path.join(bed.dir, "tmux-%d.sock" % os.getpid())
    argv = ftpssh.wrap() + [ftpssh.binary(), "--config", "none",
                            "-L", "127.0.0.1:0:%s:%d" % (srv.host, srv.port),
                            "-p", str(ssh.port), "-i", ssh.user_key,
                            "-o", "UserKnownHostsFile=%s" % ssh.known_hosts,
                            "%s@127.0.0.1" % ssh.login]
    env = {"HOME": bed.home, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "TERM": "xterm"}
    # A shell runs ftpssh and records its pid and exit status: tmux itself
    # does not always reap a pane's process promptly (pane_dead_status can
    # stay empty with the process a zombie).
    pidfile = os.path.join(bed.dir, "tmux-ftpssh.pid")
    statusfile = os.path.join(bed.dir, "tmux-ftpssh.status")
    for f in (pidfile, statusfile):
        if os.path.exists(f):
            os.unlink(f)
    cmd = "env -u SSH_AUTH_SOCK %s %s & echo $! > %s; wait $!; echo $? > %s" % (
        " ".join("%s=%s" % kv for kv in env.items()), " ".join(map(shlex.quote, argv)),
        shlex.quote(pidfile), shlex.quote(statusfile))

    def tm(*args, check=True):
        r = subprocess.run([tmux, "-S", sock] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        out = r.stdout.decode("utf-8", "replace")
        if check:
            assert r.returncode == 0, "tmux %s: %s" % (" ".join(args), out)
        return out

    def screen():
        return tm("capture-pane", "-p", "-t", "living")

    tm("-f", "/dev/null", "new-session", "-d", "-s", "living", "-x", "100", "-y", "12", cmd)
    pid = None
    curl = None
    try:
        tm("set-option", "-t", "living", "remain-on-exit", "on")
        pid = int(wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                           5, "the pid of ftpssh in tmux"))
        m = wait_for(lambda: re.search(r"point your FTP client at ftp://127\.0\.0\.1:(\d+)/", screen()),
                     ftpssh.READY_TIMEOUT, "ftpssh's announcement in tmux")
        port = int(m.group(1))
        curl = subprocess.Popen(
            ["curl", "-sS", "--limit-rate", "4M", "--max-time", "30", "-o", "/dev/null",
             "-u", "%s:%s" % (testbed.FTP_USER, testbed.FTP_PASSWORD),
             "ftp://127.0.0.1:%d/%s" % (port, BIG)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def status_line():
            s = screen()
            last = [l for l in s.splitlines() if l.strip()][-1:]
            if last and re.search(r"^ftpssh: ssh up \| 1 session \| 1 transfer \| "
                                  r"[1-9]\d*\.\d MB/s \| \d+\.\d MiB", last[0]):
                return s
            return None
        shot = wait_for(status_line, 10, "the status line 'ssh up | 1 session | 1 transfer' "
                        "under the log in tmux")
        # let the rate settle for the record, then keep that screen
        time.sleep(2.5)
        shot = status_line() or shot
        os.makedirs(os.path.join(REPO, "build"), exist_ok=True)
        with open(os.path.join(REPO, "build", "status-line.txt"), "w") as f:
            f.write(shot.rstrip("\n") + "\n")
        last = [l for l in shot.splitlines() if l.strip()][-1]
        assert "ssh up" in last and "1 transfer" in last, shot
        # log lines scroll above the status line: the session line is there
        assert re.search(r"^ftpssh: \[#1\] FTP client 127\.0\.0\.1:\d+ ", shot, re.M), shot
        curl.kill()
        curl.wait(10)
        curl = None
        wait_for(lambda: re.search(r"\| 0 transfers \|", screen()), 10,
                 "the status line back at 0 transfers after the client left")
        os.kill(pid, signal.SIGTERM)
        status = wait_for(lambda: os.path.exists(statusfile) and open(statusfile).read().strip(),
                          ftpssh.STOP_TIMEOUT, "ftpssh's exit after SIGTERM")
        final = tm("capture-pane", "-p", "-S", "-200", "-t", "living")
        assert not ftpssh.SANITIZER.search(final), final
        assert status == "0", "ftpssh exited with %s after SIGTERM:\n%s" % (status, final)
        pid = None
    finally:
        if curl:
            curl.kill()
            curl.wait(10)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        tm("kill-server", check=False)
