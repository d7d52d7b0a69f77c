"""Host keys, checked against a known_hosts file through libssh2's
knownhost API, with OpenSSH's StrictHostKeyChecking meanings:

- yes (default): an unknown key refuses (exit 4), naming the file and the
  key's SHA256 fingerprint; nothing is written;
- accept-new: an unknown key is appended as one "[127.0.0.1]:PORT" line,
  which a later run with =yes then trusts;
- no: an unknown key is used, unrecorded;
- a changed key refuses whatever the setting, loudly (exit 4);
- hashed entries (ssh-keygen -H) count like plain ones.

All against the shared test-bed sshd (only connecting to it, never
changing it); known_hosts files are written fresh per test.
"""

import itertools
import os
import subprocess

import pytest

from harness import clients, ftpssh, tunnel

pytestmark = pytest.mark.ftpssh_only

HOSTKEY_REFUSED = 4
SERVER = "pyftpdlib"
_names = itertools.count(1)


@pytest.fixture
def ssh(bed):
    return bed.sshd()


@pytest.fixture(scope="module")
def host_fp(bed):
    return tunnel.fingerprint(bed.sshd().host_key + ".pub")


@pytest.fixture(scope="module")
def wrong_entry(bed):
    """A key entry that is not the server's (another ed25519 key)."""
    with open(bed.sshd().other_key + ".pub") as f:
        return " ".join(f.read().split()[:2])


def kh_path(bed, tag):
    """A path for a known_hosts file that does not exist yet."""
    d = bed.path("kh")
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, "%s-%d" % (tag, next(_names)))


def start(bed, **kw):
    return ftpssh.Ftpssh(bed, [bed.ftp_server(SERVER)], **kw)


def read(path):
    with open(path) as f:
        return f.read()


def assert_works(bed, run):
    ftp = clients.open_ftplib(run.target)
    try:
        assert ftp.nlst(), "empty NLST through %s" % run.name
    finally:
        ftp.quit()
    run.assert_alive()


def expect_refusal(run, what):
    rc = run.wait_exit()
    text = run.stderr()
    assert rc == HOSTKEY_REFUSED, "%s: expected exit status %d, got %s:\n%s" % (
        what, HOSTKEY_REFUSED, rc, text)
    assert not run.announcements(), "%s: ftpssh announced a listener anyway:\n%s" % (what, text)
    run.assert_clean()
    return text


# --- unknown key ---------------------------------------------------------------

@pytest.mark.parametrize("existing", [True, False], ids=["empty-file", "no-file"])
def test_unknown_key_strict_yes_refuses(bed, ssh, host_fp, existing):
    kh = ssh.write_known_hosts("kh-empty-%d" % next(_names)) if existing else kh_path(bed, "absent")
    run = start(bed, known_hosts=kh, strict="yes", wait=False)
    text = expect_refusal(run, "unknown host key, StrictHostKeyChecking=yes")
    assert kh in text, "the message does not name %s:\n%s" % (kh, text)
    assert host_fp in text, "the message does not show the key's fingerprint %s:\n%s" % (host_fp, text)
    assert "StrictHostKeyChecking=accept-new" in text, "no hint how to add the key:\n" + text
    if existing:
        assert read(kh) == "", "ftpssh wrote to %s with StrictHostKeyChecking=yes" % kh
    else:
        assert not os.path.exists(kh), "ftpssh created %s with StrictHostKeyChecking=yes" % kh


def test_unknown_key_is_the_default_refusal(bed, ssh):
    """No StrictHostKeyChecking option: the same refusal (no terminal)."""
    kh = ssh.write_known_hosts("kh-default-%d" % next(_names))
    run = start(bed, known_hosts=kh, strict=False, wait=False)
    expect_refusal(run, "unknown host key, no StrictHostKeyChecking option")


def test_accept_new_adds_the_key_then_yes_trusts_it(bed, ssh, host_fp, wrong_entry):
    # A file that already holds another host's key: kept as it is.
    kh = kh_path(bed, "accept-new")
    other = "[127.0.0.1]:1 %s\n" % wrong_entry
    with open(kh, "w") as f:
        f.write(other)
    run = start(bed, known_hosts=kh, strict="accept-new")
    try:
        text = run.stderr()
        assert "Permanently added" in text and host_fp in text and kh in text, text
        assert_works(bed, run)
    finally:
        run.stop()
    lines = read(kh).splitlines()
    assert lines[0] + "\n" == other, "accept-new changed the existing line:\n" + read(kh)
    assert lines[1:] == ["[127.0.0.1]:%d %s" % (ssh.port, ssh.host_key_entry)], (
        "accept-new should append exactly one '[127.0.0.1]:%d ssh-ed25519 ...' line:\n%s"
        % (ssh.port, read(kh)))
    # The line is a real known_hosts line: OpenSSH finds it too.
    found = subprocess.run(["ssh-keygen", "-F", "[127.0.0.1]:%d" % ssh.port, "-f", kh],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert found.returncode == 0, found.stdout.decode()

    # Now known: =yes connects, and nothing more is written (nor by a
    # second accept-new).
    before = read(kh)
    for strict in ("yes", "accept-new"):
        run = start(bed, known_hosts=kh, strict=strict)
        try:
            assert "Permanently added" not in run.stderr(), run.stderr()
            assert_works(bed, run)
        finally:
            run.stop()
        assert read(kh) == before, "known host, StrictHostKeyChecking=%s: file changed:\n%s" % (
            strict, read(kh))


def test_accept_new_creates_the_file(bed, ssh):
    kh = kh_path(bed, "created")
    run = start(bed, known_hosts=kh, strict="accept-new")
    run.stop()
    assert read(kh) == "[127.0.0.1]:%d %s\n" % (ssh.port, ssh.host_key_entry)


def test_strict_no_connects_and_records_nothing(bed, ssh, host_fp):
    kh = ssh.write_known_hosts("kh-no-%d" % next(_names))
    run = start(bed, known_hosts=kh, strict="no")
    try:
        assert host_fp in run.stderr(), "the unchecked key's fingerprint is not logged:\n" + run.stderr()
        assert_works(bed, run)
    finally:
        run.stop()
    assert read(kh) == ""


# --- changed key ---------------------------------------------------------------

@pytest.mark.parametrize("strict", ["yes", "accept-new", "no"])
def test_changed_key_refuses_loudly(bed, ssh, host_fp, wrong_entry, strict):
    kh = ssh.write_known_hosts("kh-changed-%d" % next(_names), wrong_entry)
    before = read(kh)
    run = start(bed, known_hosts=kh, strict=strict, wait=False)
    text = expect_refusal(run, "changed host key, StrictHostKeyChecking=%s" % strict)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text, text
    assert "@@@@@@@@" in text, "not as loud as OpenSSH's warning:\n" + text
    assert kh in text, "the message does not name %s:\n%s" % (kh, text)
    assert host_fp in text, "the message does not show the new key's fingerprint:\n" + text
    assert "ssh-keygen -R" in text, "no hint how to remove the old entry:\n" + text
    assert read(kh) == before, "a changed key must not be written to %s" % kh


def test_changed_key_hint_names_the_port(bed, ssh, wrong_entry):
    kh = ssh.write_known_hosts("kh-changed-hint-%d" % next(_names), wrong_entry)
    run = start(bed, known_hosts=kh, wait=False)
    text = expect_refusal(run, "changed host key")
    assert "ssh-keygen -R '[127.0.0.1]:%d'" % ssh.port in text, text


@pytest.mark.parametrize("which", ["other-key", "same-key"])
def test_portless_entry_is_not_this_port(bed, ssh, wrong_entry, which):
    """As OpenSSH: for port N only "[127.0.0.1]:N" entries count; a
    portless entry (the port-22 server's, say) makes the key unknown,
    neither changed nor known."""
    kh = kh_path(bed, "portless")
    entry = wrong_entry if which == "other-key" else ssh.host_key_entry
    with open(kh, "w") as f:
        f.write("127.0.0.1 %s\n" % entry)
    run = start(bed, known_hosts=kh, wait=False)
    text = expect_refusal(run, "portless entry, %s" % which)
    assert "CHANGED" not in text and "Host key verification failed" in text, text


# --- hashed entries ------------------------------------------------------------

def hashed_known_hosts(ssh, name, entry):
    kh = ssh.write_known_hosts(name, entry)
    r = subprocess.run(["ssh-keygen", "-H", "-f", kh], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    assert r.returncode == 0, r.stdout.decode()
    os.unlink(kh + ".old")
    text = read(kh)
    assert text.startswith("|1|") and "127.0.0.1" not in text, "not hashed:\n" + text
    return kh


def test_hashed_entry_accepted(bed, ssh):
    kh = hashed_known_hosts(ssh, "kh-hashed-%d" % next(_names), ssh.host_key_entry)
    before = read(kh)
    run = start(bed, known_hosts=kh, strict="yes")
    try:
        assert_works(bed, run)
    finally:
        run.stop()
    assert read(kh) == before


def test_hashed_entry_with_changed_key_refused(bed, ssh, wrong_entry):
    kh = hashed_known_hosts(ssh, "kh-hashed-changed-%d" % next(_names), wrong_entry)
    run = start(bed, known_hosts=kh, strict="accept-new", wait=False)
    text = expect_refusal(run, "hashed entry, changed key")
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text, text


# --- the default file: ~/.ssh/known_hosts of $HOME ---------------------------

def test_default_known_hosts_in_home(bed, ssh):
    home = tunnel.empty_home(bed, "kh-default-%d" % next(_names))
    os.makedirs(os.path.join(home, ".ssh"), mode=0o700)
    kh = os.path.join(home, ".ssh", "known_hosts")
    # an unknown key first: the message names the default file
    with open(kh, "w"):
        pass
    run = start(bed, known_hosts=False, strict=False, home=home, wait=False)
    text = expect_refusal(run, "unknown key, default known_hosts")
    assert kh in text, text
    # then known
    with open(kh, "w") as f:
        f.write("[127.0.0.1]:%d %s\n" % (ssh.port, ssh.host_key_entry))
    run = start(bed, known_hosts=False, strict=False, home=home)
    try:
        assert_works(bed, run)
    finally:
        run.stop()


def test_accept_new_without_dot_ssh_records_the_key(bed, ssh):
    """No ~/.ssh yet: accept-new creates it, as OpenSSH does."""
    home = tunnel.empty_home(bed, "kh-nodir-%d" % next(_names))
    run = start(bed, known_hosts=False, strict="accept-new", home=home)
    run.stop()
    kh = os.path.join(home, ".ssh", "known_hosts")
    assert os.path.exists(kh), "accept-new did not record the key:\n" + run.stderr()
    assert read(kh) == "[127.0.0.1]:%d %s\n" % (ssh.port, ssh.host_key_entry)
