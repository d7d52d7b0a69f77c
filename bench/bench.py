"""ftpssh benchmark suite (issue #6): ftpssh against the classic `ssh -N -L`
recipe, side by side in one run, with direct FTP and an in-process libssh2
reader as ceilings. See bench/README.md for what each row measures.

Run with `make bench` (or bench/run). Prints a table and writes it to
bench/results/latest.txt (plus a time-stamped copy).
"""

import datetime
import ftplib
import hashlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

from harness.blackhole import BlackHole  # noqa: E402
from harness.ftpssh import Ftpssh  # noqa: E402
from harness.procs import status_kib  # noqa: E402
from harness.testbed import FTP_PASSWORD, FTP_USER  # noqa: E402
from rig import (GIB, MIB, REPO, BenchError, Endpoint, Rig, cpu_seconds, curl_argv, io_counters,  # noqa: E402
                 loadavg, parse_curl, time_limit, tree_cpu_seconds)

# --- configuration ------------------------------------------------------------


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def human(n):
    for unit, m in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= m and n % m == 0:
            return "%d %s" % (n // m, unit)
    return "%d B" % n


class Config:
    def __init__(self):
        e = os.environ.get
        self.quick = e("BENCH_QUICK") == "1"
        q = self.quick
        self.pairs = int(e("BENCH_PAIRS", "1" if q else "3"))
        self.rtt_ms = float(e("BENCH_RTT_MS", "50"))
        self.rtt_size = parse_size(e("BENCH_RTT_SIZE", "64M" if q else "256M"))
        self.loop_size = parse_size(e("BENCH_LOOP_SIZE", "64M" if q else "1G"))
        self.conc_size = parse_size(e("BENCH_CONC_SIZE", "16M" if q else "256M"))
        self.conc_streams = int(e("BENCH_CONC_STREAMS", "8"))
        self.small_count = int(e("BENCH_SMALL_COUNT", "100" if q else "1000"))
        self.sessions = int(e("BENCH_SESSIONS", "30" if q else "200"))
        self.session_threads = int(e("BENCH_SESSION_THREADS", str(self.sessions)))
        self.conc_diag = e("BENCH_CONC_DIAG", "1") == "1"
        self.rss_size = parse_size(e("BENCH_RSS_SIZE", "1G"))
        self.rss_seconds = int(e("BENCH_RSS_SECONDS", "5" if q else "20"))
        self.rows = [int(x) for x in e("BENCH_ROWS", "1,2,3,4,5,6,7,8,9,10").split(",") if x.strip()]
        self.greet_clients = int(e("BENCH_GREET_CLIENTS", "100" if q else "500"))
        self.sftp_size = parse_size(e("BENCH_SFTP_SIZE", "64M" if q else "256M"))
        self.cipher = e("BENCH_CIPHER", "aes128-ctr")
        self.mac = e("BENCH_MAC", "hmac-sha2-256")
        self.ftpssh_args = e("BENCH_FTPSSH_ARGS", "").split()
        base = int(e("BENCH_PASV_BASE", "2534"))
        self.pasv_ports = [base, base + 1, base + 2]
        self.ref_host = e("BENCH_REF_HOST", "127.0.0.2")
        self.reader_window = parse_size(e("BENCH_READER_BIG_WINDOW", "34M"))
        self.results = e("BENCH_RESULTS", os.path.join(HERE, "results"))

    def describe(self):
        return ("%d pair%s; %s; sizes: RTT %s, loopback %s, %d x %s concurrent, %d x 1 KiB, "
                "%d sessions, RSS %s for %d s; %s + %s%s" % (
                    self.pairs, "" if self.pairs == 1 else "s",
                    "QUICK (small sizes: not the issue's figures)" if self.quick else "full sizes",
                    human(self.rtt_size), human(self.loop_size), self.conc_streams,
                    human(self.conc_size), self.small_count, self.sessions,
                    human(self.rss_size), self.rss_seconds, self.cipher, self.mac,
                    ("; ftpssh " + " ".join(self.ftpssh_args)) if self.ftpssh_args else ""))


# Failures that did not break a row but deserve the daemons' logs.
INCIDENTS = []


def first_line(e):
    text = str(e).strip()
    return (text.splitlines()[0][:100] if text else "") or type(e).__name__


def progress(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --- the table ------------------------------------------------------------------


class Table:
    COLS = ("row", "measure", "ssh -L / base", "ftpssh", "ratio", "target", "verdict")

    def __init__(self):
        self.lines = []   # (row, measure, ref, ftpssh, ratio, target, verdict)
        self.notes = []   # (row, text)
        self.details = []

    def add(self, row, measure, ref="", ftp="", ratio="", target="report", verdict=""):
        self.lines.append((str(row), measure, ref, ftp, ratio, target, verdict))

    def note(self, row, text):
        self.notes.append((str(row), text))

    def detail(self, text):
        self.details.append(text)

    def render(self, header):
        rows = [self.COLS] + self.lines
        w = [max(len(r[i]) for r in rows) for i in range(len(self.COLS))]
        out = list(header)
        out.append("")
        for i, r in enumerate(rows):
            out.append("  ".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip())
            if i == 0:
                out.append("  ".join("-" * w[j] for j in range(len(w))))
        if self.notes:
            out.append("")
            out.append("Notes:")
            for row, text in self.notes:
                out.append("  [%s] %s" % (row, text))
        if self.details:
            out.append("")
            out.append("Runs (every measurement, in order):")
            out += ["  " + d for d in self.details]
        return "\n".join(out) + "\n"


def f1(x):
    return "-" if x is None else "%.1f" % x


def f2(x):
    return "-" if x is None else "%.2f" % x


def f3(x):
    return "-" if x is None else "%.3f" % x


def verdict(ok):
    if ok is None:
        return "?"
    return "met" if ok else "NOT met"


def per_gib(r):
    return r["cpu"] * GIB / r["bytes"] if r.get("bytes") else None


# --- helpers for the rows -----------------------------------------------------------


def check_crossed(ep, r, what, size):
    """The reference's data must really cross ssh: the ssh client read (RETR)
    or wrote (STOR) at least SIZE bytes during the transfer."""
    moved = r.get("rchar", 0) if what == "RETR" else r.get("wchar", 0)
    if moved < size:
        raise BenchError("%s %s: the %s process moved only %d bytes for a %d-byte transfer: "
                         "data did not cross ssh" % (ep.name, what, ep.name, moved, size))


def abba(i, first, second):
    """The order of pair i: A B, then B A, in turn. A side that always ran
    first (cold caches, a connection's first transfer) or always second
    would carry that in every pair."""
    return (first, second) if i % 2 == 0 else (second, first)


def pair_runs(cfg, table, row, tag, a_ep, b_ep, fn):
    """Run fn(ep) for cfg.pairs pairs, in abba() order."""
    A, B = [], []
    for i in range(cfg.pairs):
        for ep, acc in abba(i, (a_ep, A), (b_ep, B)):
            try:
                r = fn(ep)
            except Exception as e:  # noqa: BLE001 - say which side broke
                raise BenchError("%s, pair %d, %s: %s: %s" % (tag, i + 1, ep.name, type(e).__name__,
                                                               first_line(e))) from e
            acc.append(r)
            table.detail("[%s] %s pair %d %-7s %s" % (row, tag, i + 1, ep.name, fmt_run(r)))
            progress("[%s] %s pair %d/%d %s: %s" % (row, tag, i + 1, cfg.pairs, ep.name, fmt_run(r)))
    return A, B


def fmt_run(r):
    parts = []
    if "mbps" in r:
        parts.append("%.1f MB/s" % r["mbps"])
    if r.get("data_mbps"):
        parts.append("data phase %.1f MB/s" % r["data_mbps"])
    if "seconds" in r:
        parts.append("%.3f s" % r["seconds"])
    if r.get("cpu") is not None and r.get("bytes"):
        parts.append("cpu %.2f s (%.2f s/GiB)" % (r["cpu"], per_gib(r)))
    if r.get("sshd_cpu") is not None and r.get("bytes"):
        parts.append("sshd %.2f s/GiB" % (r["sshd_cpu"] * GIB / r["bytes"]))
    for k in ("ok", "of", "max_rss_kib", "list_s"):
        if k in r:
            parts.append("%s=%s" % (k, r[k]))
    return ", ".join(parts)


def ratios(A, B, key):
    return [b[key] / a[key] for a, b in zip(A, B) if a.get(key) and b.get(key) is not None]


# --- row 1: long link ------------------------------------------------------------------


def tcp_wmem_max():
    """The kernel's ceiling on a TCP socket's send buffer, or None."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return None


def row1(cfg, rig, table):
    rtt, rate = rig.relay_selfcheck(cfg.rtt_ms, size=cfg.rtt_size)
    table.note(1, "relay self-check: round trip %.1f ms, bulk %.0f MB/s through it (to a local sink)"
               % (rtt, rate))
    progress("[1] relay self-check: round trip %.1f ms, bulk %.0f MB/s" % (rtt, rate))
    wmem = tcp_wmem_max()
    if wmem:
        table.note(1, "the relay hides the delay from TCP; on a real %g ms link a Linux sshd with "
                      "this machine's tcp_wmem maximum (%s) keeps at most that much in flight: "
                      "%.0f MB/s for one SSH connection, whatever the window"
                   % (cfg.rtt_ms, human(wmem), wmem / (cfg.rtt_ms / 1000.0) / 1e6))
    relay = rig.start_relay(cfg.rtt_ms)
    ref = ftp = None
    try:
        ref = rig.start_ref(ssh_port=relay.port, tag="ssh-L-rtt")
        ftp = rig.start_ftpssh(ssh_port=relay.port)
        name, local = rig.data_file(cfg.rtt_size)
        size = cfg.rtt_size

        def retr(ep):
            r = ep.retr(name, size)
            if ep is ref:
                check_crossed(ep, r, "RETR", size)
            return r

        def stor(ep):
            r = ep.stor(local, size, rig.upload_name("rtt"))
            if ep is ref:
                check_crossed(ep, r, "STOR", size)
            return r

        A, B = pair_runs(cfg, table, 1, "RTT RETR", ref, ftp, retr)
        ratio = median(ratios(A, B, "mbps"))
        table.add(1, "%g ms RTT, %s RETR MB/s" % (cfg.rtt_ms, human(size)),
                  f1(median([a["mbps"] for a in A])), f1(median([b["mbps"] for b in B])),
                  f2(ratio), ">= 4", verdict(ratio is not None and ratio >= 4))
        A, B = pair_runs(cfg, table, 1, "RTT STOR", ref, ftp, stor)
        table.add(1, "%g ms RTT, %s STOR MB/s" % (cfg.rtt_ms, human(size)),
                  f1(median([a["mbps"] for a in A])), f1(median([b["mbps"] for b in B])),
                  f2(median(ratios(A, B, "mbps"))), "report", "")
        table.note(1, "STOR is bounded by sshd's own receive window (OpenSSH: 2 MiB per "
                      "direct-tcpip channel), for ftpssh as for ssh -L.")
        # libssh2's own figures on the same link, for orientation.
        small = rig.reader(size, ssh_port=relay.port)
        big = rig.reader(size, ssh_port=relay.port, window=cfg.reader_window)
        table.detail("[1] ssh_reader at %g ms, window 2 MiB: %s" % (cfg.rtt_ms, fmt_run(small)))
        table.detail("[1] ssh_reader at %g ms, window %s: %s" % (cfg.rtt_ms, human(cfg.reader_window),
                                                                 fmt_run(big)))
        table.note(1, "libssh2 reader on the same link: %.1f MB/s with its default 2 MiB window, "
                      "%.1f MB/s with a %s window (one run each)."
                   % (small["mbps"], big["mbps"], human(cfg.reader_window)))
    finally:
        rig.stop(ref)
        bad = rig.stop(ftp)
        if bad:
            table.note(1, "ftpssh did not stop cleanly: " + bad)
        relay.stop()


# --- rows 2 and 7: loopback bulk and CPU ------------------------------------------------


def row2(cfg, rig, table, ref, ftp):
    size = cfg.loop_size
    name, local = rig.data_file(size)
    direct = rig.direct()
    chans0 = rig.ref_channels()

    def retr(ep):
        r = ep.retr(name, size)
        if ep is ref:
            check_crossed(ep, r, "RETR", size)
        return r

    def stor(ep):
        r = ep.stor(local, size, rig.upload_name("loop"))
        if ep is ref:
            check_crossed(ep, r, "STOR", size)
        return r

    RA, RB, SA, SB, DR, DS, RD = [], [], [], [], [], [], []
    for i in range(cfg.pairs):
        for what, fn, a, b in (("RETR", retr, RA, RB), ("STOR", stor, SA, SB)):
            for ep, acc in abba(i, (ref, a), (ftp, b)):
                r = fn(ep)
                acc.append(r)
                table.detail("[2] loopback %s pair %d %-7s %s" % (what, i + 1, ep.name, fmt_run(r)))
                progress("[2] loopback %s pair %d/%d %s: %s" % (what, i + 1, cfg.pairs, ep.name, fmt_run(r)))
        r = direct.retr(name, size)
        DR.append(r)
        table.detail("[2] direct RETR %d %s" % (i + 1, fmt_run(r)))
        r = direct.stor(local, size, rig.upload_name("direct"))
        DS.append(r)
        table.detail("[2] direct STOR %d %s" % (i + 1, fmt_run(r)))
        r = rig.reader(size)
        RD.append(r)
        table.detail("[2] ssh_reader %d %s" % (i + 1, fmt_run(r)))
        progress("[2] pair %d/%d: direct %.0f/%.0f MB/s, libssh2 reader %.0f MB/s %.2f cpu-s/GiB"
                 % (i + 1, cfg.pairs, DR[-1]["mbps"], DS[-1]["mbps"], r["mbps"], per_gib(r)))
    chans = rig.ref_channels() - chans0
    table.note(2, "reference data crossed ssh: sshd opened %d direct-tcpip channels to %s:%d-%d, "
                  "and the ssh client read/wrote at least the file size in every transfer."
               % (chans, "127.0.0.1", cfg.pasv_ports[0], cfg.pasv_ports[-1]))
    if chans < 2 * cfg.pairs:
        raise BenchError("only %d reference data channels in sshd's log" % chans)

    s = human(size)
    for what, A, B in (("RETR", RA, RB), ("STOR", SA, SB)):
        ratio = median(ratios(A, B, "mbps"))
        table.add(2, "loopback %s %s MB/s" % (s, what), f1(median([a["mbps"] for a in A])),
                  f1(median([b["mbps"] for b in B])), f2(ratio), ">= 1.0 (goal)",
                  verdict(ratio is not None and ratio >= 1.0))
    rd_cpu = median([per_gib(r) for r in RD])
    for what, B in (("RETR", RB), ("STOR", SB)):
        fc = median([per_gib(b) for b in B])
        ratio = fc / rd_cpu if fc and rd_cpu else None
        table.add(2, "CPU s/GiB %s: ftpssh vs libssh2 reader" % what, f2(rd_cpu) + " (reader)",
                  f2(fc), f2(ratio), "<= 1.2", verdict(ratio is not None and ratio <= 1.2))
    table.add(2, "ceiling: direct curl RETR / STOR MB/s", "%s / %s" % (
        f1(median([r["mbps"] for r in DR])), f1(median([r["mbps"] for r in DS]))), "", "", "", "")
    table.add(2, "ceiling: libssh2 reader, 1 channel, MB/s", f1(median([r["mbps"] for r in RD])),
              "", "", "", "")
    return {"RA": RA, "RB": RB, "SA": SA, "SB": SB, "RD": RD}


# Row 10 (issue 13): like with like, and what users get by default.
ROW10_CASES = [
    ("aes128-gcm", ("aes128-gcm@openssh.com", None)),
    ("aes128-ctr+etm", ("aes128-ctr", "hmac-sha2-256-etm@openssh.com")),
    ("defaults", ()),  # ftpssh's own choice against OpenSSH's (chacha20-poly1305)
]


def row10(cfg, rig, table):
    size = cfg.loop_size
    name, local = rig.data_file(size)
    s = human(size)
    for label, algos in ROW10_CASES:
        ref = ftp = None
        try:
            ref = rig.start_ref(algos=algos, tag="ssh-L-" + label)
            ftp = rig.start_ftpssh(algos=algos)
            R = {("RETR", "ref"): [], ("RETR", "ftp"): [], ("STOR", "ref"): [], ("STOR", "ftp"): []}
            for i in range(cfg.pairs):
                for what in ("RETR", "STOR"):
                    for ep, key in abba(i, (ref, "ref"), (ftp, "ftp")):
                        if what == "RETR":
                            r = ep.retr(name, size)
                        else:
                            r = ep.stor(local, size, rig.upload_name("algo"))
                        if ep is ref:
                            check_crossed(ep, r, what, size)
                        R[(what, key)].append(r)
                        table.detail("[10] %s %s pair %d %-7s %s" % (label, what, i + 1, ep.name,
                                                                    fmt_run(r)))
                        progress("[10] %s %s pair %d/%d %s: %s" % (label, what, i + 1, cfg.pairs,
                                                                  ep.name, fmt_run(r)))
            for what in ("RETR", "STOR"):
                A, B = R[(what, "ref")], R[(what, "ftp")]
                ratio = median(ratios(A, B, "mbps"))
                goal = 1.2 if label == "defaults" else 1.0
                table.add(10, "%s: loopback %s %s MB/s" % (label, s, what),
                          f1(median([a["mbps"] for a in A])), f1(median([b["mbps"] for b in B])),
                          f2(ratio), ">= %.1f (goal)" % goal, verdict(ratio is not None and ratio >= goal))
                a = median([per_gib(x) for x in A])
                b = median([per_gib(x) for x in B])
                table.add(10, "%s: CPU s/GiB %s, ssh vs ftpssh" % (label, what), f2(a), f2(b),
                          f2(b / a if a and b else None), "<= 1.0",
                          verdict(a is not None and b is not None and b <= a))
        finally:
            rig.stop(ref)
            rig.stop(ftp)
    table.note(10, "same cipher on both sides (MAC: the etm one, or the AEAD cipher's own), then "
                   "each program's default choice: ftpssh's MUX_DEFAULT_CIPHERS against OpenSSH's "
                   "(ssh -F /dev/null, no -c/-m).")


def sshd_per_gib(r):
    return r["sshd_cpu"] * GIB / r["bytes"] if r.get("sshd_cpu") is not None and r.get("bytes") else None


def row7(cfg, table, r2):
    if not r2:
        table.add(7, "CPU s/GiB (needs row 2)", "", "", "", "report", "")
        return
    for what, A, B in (("RETR", r2["RA"], r2["RB"]), ("STOR", r2["SA"], r2["SB"])):
        a = median([per_gib(x) for x in A])
        b = median([per_gib(x) for x in B])
        table.add(7, "CPU user+sys s/GiB, loopback %s" % what, f2(a) + " (ssh)", f2(b),
                  f2(b / a if a and b else None), "report", "")
    for what, A, B in (("RETR", r2["RA"], r2["RB"]), ("STOR", r2["SA"], r2["SB"])):
        a = median([sshd_per_gib(x) for x in A])
        b = median([sshd_per_gib(x) for x in B])
        table.add(7, "  sshd's CPU s/GiB serving each, %s" % what, f2(a), f2(b),
                  f2(b / a if a and b else None), "report", "")


# --- row 3: concurrent streams ------------------------------------------------------------


def concurrent_retrs(ftp, name, size, n, with_list=True):
    """N curl RETRs of NAME at once through FTP; with_list, a LIST on a
    session logged in beforehand, issued once an eighth of the bulk moved."""
    lister = None
    if with_list:
        lister = ftplib.FTP(timeout=60)
        lister.connect(ftp.host, ftp.port)
        lister.login(FTP_USER, FTP_PASSWORD)
    argv = curl_argv(ftp.host, ftp.port, name, ["-o", "/dev/null", "--max-time", str(time_limit(size))])
    rchar0 = io_counters(ftp.pid)[0]
    cpu0, sshd0 = cpu_seconds(ftp.pid), tree_cpu_seconds(ftp.sshd_pid)
    t0 = time.monotonic()
    curls = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(n)]
    list_s, lines, running = None, [], n
    if lister:
        deadline = t0 + 5
        while time.monotonic() < deadline and io_counters(ftp.pid)[0] - rchar0 < n * size / 8:
            time.sleep(0.01)
        lt0 = time.monotonic()
        lister.retrlines("LIST", lines.append)
        list_s = time.monotonic() - lt0
        running = sum(1 for p in curls if p.poll() is None)
        lister.quit()
    speeds, ends = [], []
    for p in curls:
        out, err = p.communicate(timeout=time_limit(size) + 30)
        ends.append(time.monotonic())
        down, _, total = parse_curl(out.decode())
        if p.returncode != 0 or down != size:
            raise BenchError("concurrent RETR failed: exit %d, %d of %d bytes: %s"
                             % (p.returncode, down, size, err.decode()[-500:]))
        speeds.append(down / total / 1e6)
    wall = max(ends) - t0
    return {"agg": n * size / wall / 1e6, "speeds": speeds, "list_s": list_s, "lines": len(lines),
            "running": running,
            "cpu": (cpu_seconds(ftp.pid) - cpu0) * GIB / (n * size),
            "sshd": (tree_cpu_seconds(ftp.sshd_pid) - sshd0) * GIB / (n * size)}


def row3(cfg, rig, table, ftp):
    size = cfg.conc_size
    n = cfg.conc_streams
    name, _ = rig.data_file(size)
    singles, aggs, fairs, lists = [], [], [], []
    cpus = {"single": [], "single_sshd": [], "conc": [], "conc_sshd": []}
    late = 0
    for i in range(cfg.pairs):
        single = ftp.retr(name, size)
        singles.append(single["mbps"])
        c = concurrent_retrs(ftp, name, size, n)
        if c["running"] < n:
            late += 1
        aggs.append(c["agg"])
        fairs.append(min(c["speeds"]) / max(c["speeds"]))
        lists.append(c["list_s"])
        for k, v in (("single", per_gib(single)), ("single_sshd", sshd_per_gib(single)),
                     ("conc", c["cpu"]), ("conc_sshd", c["sshd"])):
            cpus[k].append(v)
        d = ("[3] rep %d: single %.1f MB/s; %d streams aggregate %.1f MB/s, per stream %s; "
             "LIST %.3f s (%d lines, %d of %d streams still running at its end); CPU s/GiB: "
             "single ftpssh %.2f sshd %.2f, concurrent ftpssh %.2f sshd %.2f"
             % (i + 1, single["mbps"], n, c["agg"], " ".join("%.1f" % x for x in c["speeds"]),
                c["list_s"], c["lines"], c["running"], n, per_gib(single), sshd_per_gib(single),
                c["cpu"], c["sshd"]))
        table.detail(d)
        progress(d)
    s, a = median(singles), median(aggs)
    table.add(3, "%d x %s RETR: aggregate vs single MB/s" % (n, human(size)), f1(s) + " (single)",
              f1(a), f2(a / s), ">= 1.0", verdict(a >= s))
    fair = median(fairs)
    table.add(3, "%d x %s RETR: slowest/fastest stream" % (n, human(size)), "", f2(fair), "",
              ">= 0.67", verdict(fair >= 0.67))
    ls = max(lists)
    table.add(3, "LIST during them, s (worst of %d)" % len(lists), "", f3(ls), "", "< 1 s",
              verdict(ls < 1.0))
    table.note(3, "ftpssh only: the reference's passive range (3 ports) cannot hold %d transfers." % n)
    table.note(3, "CPU s/GiB, single stream: ftpssh %s, sshd %s; %d concurrent: ftpssh %s, sshd %s"
               % (f2(median(cpus["single"])), f2(median(cpus["single_sshd"])), n,
                  f2(median(cpus["conc"])), f2(median(cpus["conc_sshd"]))))
    if late:
        table.note(3, "in %d repetition(s) some streams had ended before the LIST finished "
                      "(sizes too small for the machine?)" % late)
    if cfg.conc_diag:
        # Diagnostic, one run: the same bulk from an ftpssh whose windows
        # cannot grow, to show what the window growth costs on loopback.
        diag = rig.start_ftpssh(args=cfg.ftpssh_args + ["--window-max=%d" % (2 * MIB)])
        try:
            c = concurrent_retrs(diag, name, size, n, with_list=False)
        finally:
            rig.stop(diag)
        d = ("diagnostic, one run: the same %d streams through an ftpssh with --window-max=2097152: "
             "aggregate %.1f MB/s; CPU s/GiB ftpssh %.2f, sshd %.2f" % (n, c["agg"], c["cpu"], c["sshd"]))
        table.note(3, d)
        progress("[3] " + d)


# --- row 4: many small transfers -------------------------------------------------------------


def small_retrs(ep, name, count, limit_s):
    """COUNT RETRs of a 1 KiB file in one ftplib session (PASV each). A
    lost control connection is logged, counted and replaced by a new
    session (the time to log in again counts): one failure must not hide
    the figures, and the count is reported."""
    def login():
        f = ftplib.FTP(timeout=30)
        f.connect(ep.host, ep.port)
        f.login(FTP_USER, FTP_PASSWORD)
        return f
    ftp = login()
    cpu0 = cpu_seconds(ep.pid) if ep.pid else None
    t0 = time.monotonic()
    done = 0
    failures = []
    while done < count and time.monotonic() - t0 < limit_s:
        buf = bytearray()
        try:
            ftp.retrbinary("RETR " + name, buf.extend)  # ftplib: PASV on IPv4
            if len(buf) != 1024:
                raise BenchError("returned %d bytes" % len(buf))
        except (OSError, EOFError, ftplib.Error, BenchError) as e:
            failures.append("RETR %d: %s: %s" % (done + 1, type(e).__name__, first_line(e)))
            INCIDENTS.append(failures[-1])
            progress("[4] %s: %s" % (ep.name, failures[-1]))
            if len(failures) > 10:
                raise BenchError("%s: more than 10 failures in small RETRs: %s" % (ep.name, failures))
            ftp.close()
            ftp = login()
        done += 1
    secs = time.monotonic() - t0
    cpu = cpu_seconds(ep.pid) - cpu0 if ep.pid else None
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        ftp.close()
    if done != count:
        raise BenchError("%s: only %d of %d small RETRs within %d s" % (ep.name, done, count, limit_s))
    return {"seconds": secs, "cpu_small": cpu, "ms_each": secs / count * 1000, "failures": failures}


def row4(cfg, rig, table, ref, ftp):
    name, _ = rig.data_file(1024)
    A, B = pair_runs(cfg, table, 4, "%d x 1 KiB RETR" % cfg.small_count, ref, ftp,
                     lambda ep: small_retrs(ep, name, cfg.small_count, 300))
    direct = small_retrs(rig.direct(), name, cfg.small_count, 300)
    table.detail("[4] direct %s" % fmt_run(direct))
    ratio = median(ratios(A, B, "seconds"))
    table.add(4, "%d x 1 KiB RETR, one session, total s" % cfg.small_count,
              f2(median([a["seconds"] for a in A])), f2(median([b["seconds"] for b in B])),
              f2(ratio), "<= 1.1", verdict(ratio is not None and ratio <= 1.1))
    for tag, runs in (("ssh -L", A), ("ftpssh", B)):
        fails = [f for r in runs for f in r["failures"]]
        if fails:
            table.note(4, "%s lost the control connection %d time(s) (a new session took over): %s"
                       % (tag, len(fails), "; ".join(fails[:3])))
    table.note(4, "per RETR: ssh -L %.2f ms, ftpssh %.2f ms, direct %.2f ms (TYPE + PASV + RETR, "
                  "a new channel each); CPU for the run: ssh %.2f s, ftpssh %.2f s"
               % (median([a["ms_each"] for a in A]), median([b["ms_each"] for b in B]), direct["ms_each"],
                  median([a["cpu_small"] for a in A]), median([b["cpu_small"] for b in B])))


# --- row 5: many sessions --------------------------------------------------------------------------


def many_sessions(ep, n, name, want_sha, threads_max):
    """N sessions log in and hold; once all are in (or failed), each does
    LIST and RETRs 1 MiB. Returns counts; every wait is bounded."""
    go = threading.Event()
    lock = threading.Lock()
    state = {"in": 0, "fail_login": 0, "ok": 0, "errors": {}}
    sem = threading.Semaphore(threads_max)

    def err(kind, e):
        key = "%s: %s" % (kind, str(e).strip().splitlines()[0][:70] if str(e).strip() else type(e).__name__)
        with lock:
            state["errors"][key] = state["errors"].get(key, 0) + 1

    def one():
        with sem:
            ftp = ftplib.FTP(timeout=60)
            try:
                ftp.connect(ep.host, ep.port)
                ftp.login(FTP_USER, FTP_PASSWORD)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    state["fail_login"] += 1
                err("login", e)
                ftp.close()
                return
            with lock:
                state["in"] += 1
            go.wait(120)
            try:
                lines = []
                ftp.retrlines("LIST", lines.append)
                if not any(name in ln for ln in lines):
                    raise BenchError("LIST lacks %s" % name)
                h = hashlib.sha256()
                got = [0]

                def take(b):
                    h.update(b)
                    got[0] += len(b)
                ftp.retrbinary("RETR " + name, take, blocksize=65536)
                if got[0] != MIB or h.hexdigest() != want_sha:
                    raise BenchError("RETR: %d bytes, checksum %s" % (got[0], "ok" if h.hexdigest() == want_sha else "bad"))
                with lock:
                    state["ok"] += 1
                try:
                    ftp.quit()
                except Exception:  # noqa: BLE001
                    pass
            except Exception as e:  # noqa: BLE001
                err("transfer", e)
            finally:
                ftp.close()

    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    deadline = t0 + 120
    while time.monotonic() < deadline:
        with lock:
            if state["in"] + state["fail_login"] >= min(n, threads_max):
                break
        time.sleep(0.05)
    logged_in = state["in"]
    login_s = time.monotonic() - t0
    go.set()
    end = time.monotonic() + 300
    for t in ts:
        t.join(max(0.1, end - time.monotonic()))
    hung = sum(1 for t in ts if t.is_alive())
    return {"ok": state["ok"], "of": n, "logged_in": logged_in, "login_s": login_s,
            "seconds": time.monotonic() - t0, "hung": hung, "errors": state["errors"]}


def row5(cfg, rig, table, ref, ftp):
    name, src = rig.data_file(MIB)
    want = hashlib.sha256(open(src, "rb").read()).hexdigest()
    A, B = pair_runs(cfg, table, 5, "%d sessions" % cfg.sessions, ref, ftp,
                     lambda ep: many_sessions(ep, cfg.sessions, name, want, cfg.session_threads))
    n = cfg.sessions
    fo = min(b["ok"] for b in B)
    table.add(5, "%d sessions, LIST + 1 MiB RETR: correct" % n,
              "%d/%d" % (median([a["ok"] for a in A]), n), "%d/%d" % (fo, n), "",
              "%d/%d" % (n, n), verdict(fo == n))
    for tag, runs in (("ssh -L", A), ("ftpssh", B)):
        errs = {}
        for r in runs:
            for k, v in r["errors"].items():
                errs[k] = errs.get(k, 0) + v
        hung = sum(r["hung"] for r in runs)
        table.note(5, "%s: logged in at once %s of %d (%.1f s to log in), whole run %.1f s%s%s" % (
            tag, "/".join(str(r["logged_in"]) for r in runs), n,
            median([r["login_s"] for r in runs]), median([r["seconds"] for r in runs]),
            "; failures: " + "; ".join("%dx %s" % (v, k) for k, v in sorted(errs.items(), key=lambda kv: -kv[1])) if errs else "",
            "; %d threads still hung at the deadline" % hung if hung else ""))


# --- row 8: channel opens ------------------------------------------------------------------


def greetings(ep, n, limit_s=120, failures=None):
    """Seconds until each of n clients, all connecting at once, reads its
    220 (None for a failure, whose reason is counted in `failures`)."""
    out = [None] * n
    t0 = time.monotonic()
    lock = threading.Lock()

    def fail(why):
        if failures is not None:
            with lock:
                failures[why] = failures.get(why, 0) + 1

    def one(i):
        try:
            s = socket.create_connection((ep.host, ep.port), timeout=limit_s)
            s.settimeout(limit_s)
            line = s.makefile("rb").readline()
            if line.startswith(b"220"):
                out[i] = time.monotonic() - t0
            else:
                fail(line[:70].decode("ascii", "replace").strip() or "closed")
            s.close()
        except OSError as e:
            fail(type(e).__name__)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit_s + 10)
    return out


def greeting_stats(table, name, g):
    """(median, p90, max, greeted) of one greetings() run, logged."""
    ok = sorted(x for x in g if x is not None)
    p90 = ok[min(len(ok) - 1, int(0.9 * len(ok)))] if ok else None
    res = (median(ok), p90, ok[-1] if ok else None, len(ok))
    table.detail("[8] %s: %d/%d greeted, median %s s, p90 %s s, max %s s" % (
        name, len(ok), len(g), f2(res[0]), f2(res[1]), f2(res[2])))
    return res


def row8(cfg, rig, table):
    # The far end is bench/greeter.py, which greets every client at once:
    # vsftpd forks per client and cannot greet 500 at once itself, so
    # behind it the row would measure vsftpd.
    n = cfg.greet_clients
    greeter = rig.start_greeter()
    relay = ref = ftp = None
    try:
        relay = rig.start_relay(cfg.rtt_ms)
        ref = rig.start_ref(ssh_port=relay.port, tag="ssh-L-opens", server_port=greeter.port)
        ftp = rig.start_ftpssh(ssh_port=relay.port, server=greeter)
        direct = Endpoint("direct", greeter.host, greeter.port)
        res = {}
        for ep in (direct, ref, ftp):
            why = {}
            res[ep.name] = greeting_stats(table, ep.name, greetings(ep, n, failures=why))
            for k, v in sorted(why.items()):
                table.detail("[8] %s: %d x %s" % (ep.name, v, k))
        d, r, f = res["direct"], res[ref.name], res[ftp.name]
        table.add(8, "%d clients at %g ms RTT: median greeting, s" % (n, cfg.rtt_ms),
                  f2(r[0]), f2(f[0]), "", "< 1", verdict(f[0] is not None and f[0] < 1 and f[3] == n))
        table.add(8, "... p90 / max greeting, s", "%s / %s" % (f2(r[1]), f2(r[2])),
                  "%s / %s" % (f2(f[1]), f2(f[2])), "", "report", "")
        table.add(8, "... greeted / clients", "%d/%d" % (r[3], n), "%d/%d" % (f[3], n), "",
                  "report", "")
        table.add(8, "... base: straight to the greeter, no SSH: median / p90 / max, s (greeted)",
                  "%s / %s / %s (%d)" % (f2(d[0]), f2(d[1]), f2(d[2]), d[3]), "", "", "report", "")
    finally:
        rig.stop(ref)
        bad = rig.stop(ftp)
        if bad:
            table.note(8, "ftpssh did not stop cleanly: " + bad)
        if relay:
            relay.stop()
        greeter.stop()
    # a forward to a black-holed host next to a working one
    hole = BlackHole()
    fx = None
    held = []
    try:
        fx = Ftpssh(rig.bed, [hole, rig.srv], known_hosts=rig.known_hosts, ssh_port=rig.ssh.port)
        bad_t, good_t = fx.targets
        for _ in range(3):
            held.append(socket.create_connection((bad_t.host, bad_t.port), timeout=10))
        time.sleep(0.5)
        g = [x for x in greetings(good_t, 5, limit_s=90) if x is not None]
        worst = max(g) if len(g) == 5 else None
        table.add(8, "black-holed -L beside a working one: working greeting, s", "",
                  f2(worst), "", "< 1", verdict(worst is not None and worst < 1))
    finally:
        for s in held:
            s.close()
        if fx:
            fx.stop(check=False)
        hole.close()


# --- row 6: memory ---------------------------------------------------------------------------------


def slow_reader_rss(ep, name, size, seconds):
    """RETR at ~1 MB/s for SECONDS; the forwarder's VmRSS sampled every 0.1 s."""
    base = status_kib(ep.pid, "VmRSS")
    argv = curl_argv(ep.host, ep.port, name, ["-o", "/dev/null", "--limit-rate", "1M",
                                              "--max-time", str(seconds)])
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = base
    t_end = time.monotonic() + seconds + 15
    while p.poll() is None and time.monotonic() < t_end:
        peak = max(peak, status_kib(ep.pid, "VmRSS"))
        time.sleep(0.1)
    if p.poll() is None:
        p.kill()
    out, _ = p.communicate()
    down, _, total = parse_curl(out.decode())
    # curl ends with 28 (timeout) by design; the bytes show the rate held.
    time.sleep(1.0)
    after = status_kib(ep.pid, "VmRSS")
    return {"base_kib": base, "max_rss_kib": peak, "after_kib": after, "bytes": down,
            "seconds": total, "rc": p.returncode}


def row6(cfg, rig, table, ref, ftp, idle_kib):
    table.add(6, "RSS of ftpssh idle, MiB", "", f1(idle_kib / 1024), "", "<= 8",
              verdict(idle_kib <= 8 * 1024))
    name, _ = rig.data_file(cfg.rss_size)
    res = {}
    for ep in (ref, ftp):
        r = slow_reader_rss(ep, name, cfg.rss_size, cfg.rss_seconds)
        res[ep.name] = r
        d = ("[6] %s: %s RETR at --limit-rate 1M for %d s: %.1f MB received, RSS %.1f MiB before, "
             "max %.1f MiB, %.1f MiB 1 s after (curl exit %d)"
             % (ep.name, human(cfg.rss_size), cfg.rss_seconds, r["bytes"] / 1e6, r["base_kib"] / 1024,
                r["max_rss_kib"] / 1024, r["after_kib"] / 1024, r["rc"]))
        table.detail(d)
        progress(d)
    a, b = res["ssh -L"], res["ftpssh"]
    table.add(6, "max RSS during %s RETR at 1 MB/s, MiB" % human(cfg.rss_size), f1(a["max_rss_kib"] / 1024),
              f1(b["max_rss_kib"] / 1024), "", "<= 32", verdict(b["max_rss_kib"] <= 32 * 1024))
    table.note(6, "slow client received %.1f MB (ssh -L) and %.1f MB (ftpssh) in %d s."
               % (a["bytes"] / 1e6, b["bytes"] / 1e6, cfg.rss_seconds))


# --- row 9: the SFTP front end against OpenSSH's sftp ----------------------------------------------------


class SftpClient:
    """OpenSSH's sftp get/put, the reference for row 9."""
    name = "sftp"

    def __init__(self, rig, ssh_port):
        self.rig = rig
        self.port = ssh_port

    def retr(self, name, size):
        return self.rig.sftp_cmd(self.port, "get %s /dev/null\n" % os.path.join(self.rig.root, name),
                                 size, "get")

    def stor(self, local, size, remote):
        path = os.path.join(self.rig.root, remote)
        r = self.rig.sftp_cmd(self.port, "put %s %s\n" % (local, path), size, "put")
        stored = os.path.getsize(path) if os.path.exists(path) else -1
        if os.path.exists(path):
            os.unlink(path)
        if stored != size:
            raise BenchError("sftp put: server holds %d of %d bytes" % (stored, size))
        return r


def row9(cfg, rig, table):
    size = cfg.sftp_size
    name, local = rig.data_file(size)
    for rtt in (0, cfg.rtt_ms):
        label = "%g ms RTT" % rtt if rtt else "loopback"
        relay = rig.start_relay(rtt) if rtt else None
        port = relay.port if relay else rig.ssh.port
        ftp = None
        try:
            ftp = rig.start_ftpssh_sftp(ssh_port=port)
            ref = SftpClient(rig, port)
            for what, fn in (("RETR", lambda ep: ep.retr(name, size)),
                             ("STOR", lambda ep: ep.stor(local, size, rig.upload_name("sftp")))):
                A, B = pair_runs(cfg, table, 9, "sftp %s %s" % (label, what), ref, ftp, fn)
                ratio = median(ratios(A, B, "mbps"))
                table.add(9, "sftp front end, %s, %s %s MB/s (vs sftp %s)"
                          % (label, human(size), what, "get" if what == "RETR" else "put"),
                          f1(median([a["mbps"] for a in A])), f1(median([b["mbps"] for b in B])),
                          f2(ratio), ">= 1.0 (goal)", verdict(ratio is not None and ratio >= 1.0))
        finally:
            bad = rig.stop(ftp)
            if bad:
                table.note(9, "ftpssh (sftp front end) did not stop cleanly: " + bad)
            if relay:
                relay.stop()
    table.note(9, "reference: OpenSSH sftp get/put with the same cipher/MAC, wall time with its "
                  "SSH login; ftpssh: curl through -L 0:sftp (SSH already up; the subsystem "
                  "channel opens at FTP login, inside curl's time).")


# --- main ------------------------------------------------------------------------------------------------


def git_state():
    def run(*a):
        try:
            return subprocess.run(["git", "-C", REPO] + list(a), capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    head = run("rev-parse", "--short", "HEAD")
    head = "tree at " + head
    dirty = run("status", "--porcelain", "--", "mux", "proxy", "ftpparse")
    return head + (" + uncommitted changes in mux/proxy/ftpparse" if dirty else "")


def main():
    cfg = Config()
    if os.geteuid() != 0:
        print("bench: runs as root (the test bed runs sshd and vsftpd)", file=sys.stderr)
        return 2
    # Hundreds of sessions: make sure descriptors are not the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    if "FTPSSH_TEST_TMPDIR" not in os.environ:
        tmp = os.environ.get("BENCH_TMPDIR", "/dev/shm" if os.access("/dev/shm", os.W_OK) else "")
        if tmp:
            os.environ["FTPSSH_TEST_TMPDIR"] = tmp

    started = datetime.datetime.now()
    load0 = loadavg()
    progress("starting: %s; load %.2f" % (cfg.describe(), load0))
    table = Table()
    errors = []
    rig = Rig(cfg, progress)
    ref = ftp = None
    idle_kib = None
    try:
        if 1 in cfg.rows:
            progress("row 1")
            try:
                row1(cfg, rig, table)
            except Exception as e:  # noqa: BLE001
                errors.append((1, e))
                table.add(1, "ERROR: %s" % first_line(e), "", "", "", "", "ERROR")
                table.detail("[1] %s" % traceback.format_exc())
        if 8 in cfg.rows:
            progress("row 8")
            try:
                row8(cfg, rig, table)
            except Exception as e:  # noqa: BLE001
                errors.append((8, e))
                table.add(8, "ERROR: %s" % first_line(e), "", "", "", "", "ERROR")
                table.detail("[8] %s" % traceback.format_exc())
        if 9 in cfg.rows:
            progress("row 9")
            try:
                row9(cfg, rig, table)
            except Exception as e:  # noqa: BLE001
                errors.append((9, e))
                table.add(9, "ERROR: %s" % first_line(e), "", "", "", "", "ERROR")
                table.detail("[9] %s" % traceback.format_exc())
        if 10 in cfg.rows:
            progress("row 10")
            try:
                row10(cfg, rig, table)
            except Exception as e:  # noqa: BLE001
                errors.append((10, e))
                table.add(10, "ERROR: %s" % first_line(e), "", "", "", "", "ERROR")
                table.detail("[10] %s" % traceback.format_exc())
        loop_rows = [r for r in cfg.rows if r in (2, 3, 4, 5, 6, 7)]
        r2 = None
        if loop_rows:
            ftp = rig.start_ftpssh()
            time.sleep(1.0)
            idle_kib = status_kib(ftp.pid, "VmRSS")
            ref = rig.start_ref()
            # Row 6 first, while this ftpssh is fresh: its slow-reader RSS
            # must not inherit the heap that rows 2-5 leave behind (that
            # is reported separately below).
            for row, fn in ((6, lambda: row6(cfg, rig, table, ref, ftp, idle_kib)),
                            (2, lambda: row2(cfg, rig, table, ref, ftp)),
                            (3, lambda: row3(cfg, rig, table, ftp)),
                            (4, lambda: row4(cfg, rig, table, ref, ftp)),
                            (5, lambda: row5(cfg, rig, table, ref, ftp))):
                if row not in cfg.rows:
                    continue
                progress("row %d" % row)
                try:
                    out = fn()
                    if row == 2:
                        r2 = out
                except Exception as e:  # noqa: BLE001 - one broken row must not hide the rest
                    errors.append((row, e))
                    table.add(row, "ERROR: %s" % first_line(e), "", "", "", "", "ERROR")
                    table.detail("[%d] %s" % (row, traceback.format_exc()))
                if not ftp.daemon.alive():
                    raise BenchError("ftpssh died during row %d:\n%s" % (row, ftp.daemon.describe()))
                # VmHWM only grows: read after each row, it tells which row
                # set ftpssh's peak memory.
                table.detail("[%d] ftpssh after row %d: VmRSS %.1f MiB, VmHWM %.1f MiB" % (
                    row, row, status_kib(ftp.pid, "VmRSS") / 1024, status_kib(ftp.pid, "VmHWM") / 1024))
            if 7 in cfg.rows:
                row7(cfg, table, r2)
            time.sleep(1.0)
            table.add(6, "ftpssh RSS idle after the other rows / peak, MiB", "",
                      "%.1f / %.1f" % (status_kib(ftp.pid, "VmRSS") / 1024,
                                       status_kib(ftp.pid, "VmHWM") / 1024), "", "report", "")
            rig.stop(ref)
            ref = None
            bad = rig.stop(ftp)
            ftp = None
            if bad:
                table.note(6, "ftpssh did not stop cleanly after the loopback rows: " + bad)
    except Exception as e:  # noqa: BLE001 - still print what was measured
        errors.append((0, e))
        table.add(0, "FATAL: %s" % first_line(e), "", "", "", "", "ERROR")
        table.detail("[0] %s" % traceback.format_exc())
    finally:
        rig.stop(ref)
        rig.stop(ftp)
        # On a broken measurement keep the daemons' logs and configs.
        rig.close(keep_logs=bool(errors or INCIDENTS))
        if errors or INCIDENTS:
            table.note(0, "logs of this run kept in %s" % rig.bed.logdir)

    table.lines.sort(key=lambda line: int(line[0]))
    table.notes.sort(key=lambda n: int(n[0]))
    load1 = loadavg()
    header = [
        "ftpssh benchmark, %s, %s" % (started.strftime("%Y-%m-%d %H:%M"), git_state()),
        "ftpssh binary: %s" % rig.binary_id,
        cfg.describe(),
        "load average %.2f at start, %.2f at end (2 cores; other work on the machine skews "
        "wall-clock figures, ratios within this run are what count)" % (load0, load1),
        "MB/s = 10^6 bytes/s. Ratio = ftpssh / reference (median of pair ratios); "
        "reference = curl through `ssh -N -L` (classic recipe).",
    ]
    text = table.render(header)
    print(text, end="")
    os.makedirs(cfg.results, exist_ok=True)
    with open(os.path.join(cfg.results, "latest.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(cfg.results, started.strftime("bench-%Y%m%d-%H%M%S.txt")), "w") as f:
        f.write(text)
    print("bench: written to %s" % os.path.join(cfg.results, "latest.txt"), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
