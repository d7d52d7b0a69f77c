"""pytest wiring for the ftpssh integration tests.

Session fixtures own the test bed (sshd, the FTP servers) and one shared
ftpssh per FTP server; finalizers stop every process, and harness.procs
adds an atexit net and a parent-death signal on top.

Per-test time limit: pytest-timeout may not be installed, so the harness
has its own: SIGALRM around each test's setup and call (default below,
`@pytest.mark.timeout(seconds)` to change it), scaled by
FTPSSH_TEST_TIME_SCALE (5 when FTPSSH_WRAP is set, e.g. valgrind).
"""

import contextlib
import hashlib
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import ftpssh, procs, testbed  # noqa: E402

DEFAULT_TIMEOUT = 120.0
SETUP_TIMEOUT = 600.0  # the first setup may download and unpack proftpd


class TestTimeout(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (SIGALRM, harness's own)")
    config.addinivalue_line("markers", "soak: long runs behind their own make target (FTPSSH_SOAK=1)")
    config.addinivalue_line("markers", "ftpssh_only: tests ftpssh itself; skipped when "
                            "FTPSSH_TEST_MODE is ssh or direct")


def pytest_sessionstart(session):
    # `timeout` (run-all) sends SIGTERM: turn it into KeyboardInterrupt so
    # pytest runs the finalizers that stop the daemons.
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)


def pytest_report_header(config):
    m = ftpssh.mode()
    if m == "ftpssh":
        return "ftpssh under test: %s%s" % (
            (os.environ.get("FTPSSH_WRAP", "") + " ") if os.environ.get("FTPSSH_WRAP") else "",
            ftpssh.binary())
    return "FTPSSH_TEST_MODE=%s: ftpssh itself is NOT tested" % m


def pytest_collection_modifyitems(config, items):
    if ftpssh.mode() == "ftpssh":
        return
    skip = pytest.mark.skip(reason="needs ftpssh (FTPSSH_TEST_MODE=%s)" % ftpssh.mode())
    for item in items:
        if "ftpssh_only" in item.keywords:
            item.add_marker(skip)


@contextlib.contextmanager
def _time_limit(seconds, what):
    def on_alarm(signum, frame):
        raise TestTimeout("%s exceeded its %.0fs time limit" % (what, seconds))
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _time_limit(SETUP_TIMEOUT * procs.time_scale(), "setup of " + item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("timeout")
    seconds = (float(m.args[0]) if m else DEFAULT_TIMEOUT) * procs.time_scale()
    with _time_limit(seconds, item.nodeid):
        yield


# --- the sandbox ---------------------------------------------------------

@pytest.fixture(scope="session")
def bed(request):
    b = testbed.Testbed()
    yield b
    failed = request.session.testsfailed > 0
    b.close(keep_logs=failed)
    if failed or b.keep:
        request.config._ftpssh_kept = b.dir


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    kept = getattr(config, "_ftpssh_kept", None)
    if kept:
        terminalreporter.write_line("test bed logs and configs kept in %s" % kept)


class Gateways:
    """One shared forwarder (ftpssh by default) per FTP server, started on
    first use. A forwarder found dead is retired (the test that killed it
    has already failed) and a fresh one serves the following tests."""

    def __init__(self, bed):
        self.bed = bed
        self.live = {}

    def get(self, kind):
        gw = self.live.get(kind)
        if gw is None:
            gw = ftpssh.start_gateway(self.bed, [self.bed.ftp_server(kind)])
            self.live[kind] = gw
        return gw

    def retire(self, kind):
        gw = self.live.pop(kind, None)
        if gw is not None:
            gw.stop(check=False)

    def close(self):
        """Stop every shared forwarder with SIGTERM; the list of problems."""
        errors = []
        for kind, gw in sorted(self.live.items()):
            try:
                gw.stop(check=True)
            except AssertionError as e:
                errors.append("%s: %s" % (kind, e))
        self.live.clear()
        return errors


@pytest.fixture(scope="session")
def gateways(bed):
    g = Gateways(bed)
    yield g
    errors = g.close()
    if errors:
        raise ftpssh.ProxyError("\n\n".join(errors))


@pytest.fixture(params=testbed.SERVER_KINDS)
def server(request, bed):
    return bed.ftp_server(request.param)


@pytest.fixture
def proxy(gateways, server):
    """The shared forwarder for `server`; checked alive after the test."""
    gw = gateways.get(server.kind)
    gw.assert_alive()
    yield gw
    if not gw.alive():
        text = gw.describe()
        gateways.retire(server.kind)
        raise ftpssh.ProxyError("the proxy died during this test:\n" + text)
    gw.assert_alive()


@pytest.fixture
def scratch():
    """Paths to delete after the test (downloads, uploaded files)."""
    paths = []
    yield paths
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


@pytest.fixture(scope="session")
def big64(bed):
    """(name, sha256) of a 64 MiB file on the vsftpd test server: the test
    bed's data-64M, or one made here when FTPSSH_TEST_SIZES leaves it out."""
    if "64M" in bed.data:
        yield "data-64M", bed.data["64M"].sha256
        return
    srv = bed.ftp_server("vsftpd")
    path = srv.file("big-64M")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(64):
            b = os.urandom(1 << 20)
            h.update(b)
            f.write(b)
    os.chmod(path, 0o444)
    yield "big-64M", h.hexdigest()
    os.unlink(path)
