"""SSH user authentication, as users of OpenSSH expect it: ssh-agent,
key files (-i, or the defaults in ~/.ssh), encrypted keys with the
passphrase asked on the terminal, password and keyboard-interactive on the
terminal; clear failures with exit status 5. Key types: ed25519, ECDSA,
RSA (rsa-sha2 signatures with libssh2 1.11; OpenSSH 9.2 refuses libssh2
1.10's SHA-1 ones).

Every test gets an sshd of this module's own ("ssh-auth": publickey and
password; "ssh-kbdint": keyboard-interactive through PAM; "ssh-rsa-sha1":
ssh-rsa signatures allowed), so nothing here touches the shared sshd that
the shared ftpssh processes use. Terminal prompts are answered through a
pseudo-terminal that is ftpssh's controlling terminal (its /dev/tty).
"""

import itertools
import os
import shutil

import pytest

from harness import clients, ftpssh, testbed, tunnel

pytestmark = pytest.mark.ftpssh_only

PASSPHRASE = "open sesame 42"
SERVER = "pyftpdlib"
AUTH_FAILED = 5
_homes = itertools.count(1)


@pytest.fixture(scope="module")
def authd(bed):
    """sshd taking publickey and password (for the FTP test user)."""
    return bed.extra_sshd("ssh-auth", password_auth=True)


@pytest.fixture(scope="module")
def keyonlyd(bed):
    """sshd taking publickey only: a refused key ends the login at once."""
    return bed.extra_sshd("ssh-keyonly")


@pytest.fixture(scope="module")
def keys(bed, authd):
    """Keys authorized on authd, by type; "stranger" is not authorized."""
    k = {
        "ed25519": authd.user_key,
        "stranger": authd.other_key,
        "ecdsa": tunnel.make_key(bed, "id_ecdsa", "ecdsa", authorize=authd),
        "rsa": tunnel.make_key(bed, "id_rsa", "rsa", authorize=authd, bits=3072),
        "ed25519-enc": tunnel.make_key(bed, "id_ed25519_enc", "ed25519", PASSPHRASE, authorize=authd),
        "ecdsa-enc-pem": tunnel.make_key(bed, "id_ecdsa_enc_pem", "ecdsa", PASSPHRASE,
                                         authorize=authd, fmt="PEM"),
    }
    return k


def start(bed, ssh, **kw):
    kw.setdefault("extra", ["-v"])  # -v: the log says which method worked
    return ftpssh.Ftpssh(bed, [bed.ftp_server(SERVER)], ssh=ssh, **kw)


def assert_transfers(bed, run):
    clients.assert_retr_1m(bed, run)


def expect_exit(run, status, what):
    rc = run.wait_exit()
    text = run.stderr()
    assert rc == status, "%s: expected exit status %d, got %s:\n%s" % (what, status, rc, text)
    assert not run.announcements(), "%s: ftpssh announced a listener anyway:\n%s" % (what, text)
    run.assert_clean()
    return text


# --- key files ---------------------------------------------------------------

def test_ed25519_key_file(bed, authd):
    run = start(bed, authd, identity=authd.user_key)
    try:
        assert "authenticated with key %s" % authd.user_key in run.stderr()
        assert_transfers(bed, run)
    finally:
        run.stop()


def test_default_key_file_in_home(bed, authd):
    """No -i: ~/.ssh/id_ed25519 of $HOME is found and used."""
    home = tunnel.empty_home(bed, "default-key")
    os.makedirs(os.path.join(home, ".ssh"), mode=0o700)
    key = os.path.join(home, ".ssh", "id_ed25519")
    shutil.copyfile(authd.user_key, key)
    os.chmod(key, 0o600)
    run = start(bed, authd, identity=False, home=home)
    try:
        assert "authenticated with key %s" % key in run.stderr(), run.stderr()
        assert_transfers(bed, run)
    finally:
        run.stop()


def test_ecdsa_key_file(bed, authd, keys):
    run = start(bed, authd, identity=keys["ecdsa"], env=tunnel.lsan_env(bed))
    try:
        assert "authenticated with key %s" % keys["ecdsa"] in run.stderr()
        assert_transfers(bed, run)
    finally:
        # Under valgrind the libssh2 leak (see tunnel.lsan_env) counts as an
        # error exit; the ASan run checks the exit with that leak suppressed.
        run.stop(check=not ftpssh.wrap())


def test_rsa_key_against_openssh_9(bed, authd, keys):
    """OpenSSH 9.2 accepts only rsa-sha2-256/512 signatures. libssh2 1.11
    signs with them: the key logs in. libssh2 1.10 (a LIBSSH2=system build
    on Debian 12) signs with ssh-rsa (SHA-1): the key is refused, and the
    message must say why and what to do."""
    if ftpssh.libssh2_at_least(1, 11):
        run = start(bed, authd, identity=keys["rsa"])
        try:
            assert "authenticated with key %s" % keys["rsa"] in run.stderr()
            assert_transfers(bed, run)
        finally:
            run.stop()
        assert "Accepted publickey for root from 127.0.0.1" in authd.log_text()
        return
    run = start(bed, authd, identity=keys["rsa"], wait=False)
    text = expect_exit(run, AUTH_FAILED, "RSA key against OpenSSH 9.2")
    assert "Permission denied" in text, text
    assert keys["rsa"] in text, "the message does not name the key tried:\n" + text
    assert "RSA" in text and "ed25519" in text, "no hint to use an ed25519 key:\n" + text
    # sshd saw the ssh-rsa signature algorithm and refused it.
    log = authd.log_text()
    assert "ssh-rsa" in log, log[-3000:]


def test_rsa_key_works_where_sshd_allows_sha1(bed, keys):
    """The same RSA key works against an sshd that still takes ssh-rsa
    signatures: the refusal above is the signature algorithm, not the key."""
    ssh = bed.extra_sshd("ssh-rsa-sha1", extra_config=["PubkeyAcceptedAlgorithms +ssh-rsa"])
    tunnel.authorize_key(ssh, keys["rsa"])
    run = start(bed, ssh, identity=keys["rsa"])
    try:
        assert "authenticated with key %s" % keys["rsa"] in run.stderr()
        assert_transfers(bed, run)
    finally:
        run.stop()


def test_wrong_key_exit_5_with_clear_message(bed, authd):
    run = start(bed, authd, identity=authd.other_key, wait=False)
    text = expect_exit(run, AUTH_FAILED, "key not in authorized_keys")
    assert "root@127.0.0.1: Permission denied" in text, text
    assert authd.other_key in text, "the message does not name the key tried:\n" + text
    assert "ed25519" in text, text


def test_several_key_files_tried_in_order(bed, authd):
    """-i is repeatable: a refused key, then the right one."""
    run = start(bed, authd, identity=[authd.other_key, authd.user_key])
    try:
        text = run.stderr()
        assert "authenticated with key %s" % authd.user_key in text, text
        assert_transfers(bed, run)
    finally:
        run.stop()


# --- encrypted keys: passphrase on the terminal ---------------------------------

@pytest.mark.parametrize("which", ["ed25519-enc", "ecdsa-enc-pem"])
def test_encrypted_key_passphrase_on_terminal(bed, authd, keys, which):
    key = keys[which]
    env = tunnel.lsan_env(bed) if "ecdsa" in which else None
    run = start(bed, authd, identity=key, tty=True, wait=False, env=env)
    try:
        run.tty_expect("Enter passphrase for key '%s': " % key)
        run.tty_send(PASSPHRASE + "\n")
        run.wait_ready()
        assert PASSPHRASE not in run.tty_text(), "the passphrase was echoed: %r" % run.tty_text()
        assert PASSPHRASE not in run.stderr(), "the passphrase is in the log"
        assert "authenticated with key %s" % key in run.stderr()
        assert_transfers(bed, run)
    finally:
        run.stop(check=not (env and ftpssh.wrap()))


def test_encrypted_key_wrong_passphrase(bed, keyonlyd, keys):
    # (against authd, a password prompt would follow, as with ssh)
    key = keys["ed25519-enc"]
    tunnel.authorize_key(keyonlyd, key)
    run = start(bed, keyonlyd, identity=key, tty=True, wait=False)
    run.tty_expect("Enter passphrase for key '%s': " % key)
    run.tty_send("not the passphrase\n")
    text = expect_exit(run, AUTH_FAILED, "wrong passphrase")
    assert "wrong passphrase" in text, text


def test_encrypted_key_without_terminal(bed, authd, keys):
    """No controlling terminal (the harness's default): say so, exit 5."""
    run = start(bed, authd, identity=keys["ed25519-enc"], wait=False)
    text = expect_exit(run, AUTH_FAILED, "encrypted key, no terminal")
    assert "no terminal to ask for a passphrase on" in text, text
    assert keys["ed25519-enc"] in text, text


# --- password and keyboard-interactive on the terminal -------------------------

def password_run(bed, ssh, **kw):
    """ftpssh as the FTP test user, no keys anywhere (an empty $HOME, no
    -i, no agent), so only the terminal can log it in."""
    home = tunnel.empty_home(bed, "pw-%d" % next(_homes))
    return start(bed, ssh, identity=False, home=home, login=testbed.FTP_USER, use_l_option=True,
                 wait=False, **kw)


def test_password_on_terminal_and_remembered_for_reconnect(bed, authd):
    run = password_run(bed, authd, tty=True)
    prompt = "%s@127.0.0.1's password: " % testbed.FTP_USER
    try:
        run.tty_expect(prompt)
        run.tty_send(testbed.FTP_PASSWORD + "\n")
        run.wait_ready()
        text = run.stderr()
        assert "authenticated with a password" in text, text
        assert "SSH connection to %s@127.0.0.1" % testbed.FTP_USER in text, text
        assert testbed.FTP_PASSWORD not in run.tty_text() + text, "the password was echoed or logged"
        assert_transfers(bed, run)

        # The connection drops; ftpssh logs in again with the password it
        # was given, without asking anyone.
        killed = authd.kill_connections()
        assert killed, "no sshd connection process found to kill"
        tunnel.wait_for(lambda: run.stderr().count(" is up") >= 2, 15, "a reconnect", run)
        assert run.tty_text().count(prompt) == 1, "asked again on reconnect: %r" % run.tty_text()
        assert_transfers(bed, run)
    finally:
        run.stop()


def test_password_retried_after_a_typo(bed, authd):
    run = password_run(bed, authd, tty=True)
    prompt = "%s@127.0.0.1's password: " % testbed.FTP_USER
    try:
        run.tty_expect(prompt)
        run.tty_send("typo\n")
        run.tty_expect(prompt)
        run.tty_send(testbed.FTP_PASSWORD + "\n")
        run.wait_ready()
        assert "Permission denied, please try again." in run.stderr(), run.stderr()
        assert_transfers(bed, run)
    finally:
        run.stop()


def test_password_three_wrong_exit_5(bed, authd):
    run = password_run(bed, authd, tty=True)
    prompt = "%s@127.0.0.1's password: " % testbed.FTP_USER
    for _ in range(3):
        run.tty_expect(prompt)
        run.tty_send("wrong\n")
    text = expect_exit(run, AUTH_FAILED, "three wrong passwords")
    assert "password (3 tries)" in text, text
    assert run.tty_text().count(prompt) == 3, run.tty_text()


def test_password_without_terminal_exit_5(bed, authd):
    run = password_run(bed, authd)
    text = expect_exit(run, AUTH_FAILED, "password, no terminal")
    assert "password (no terminal to ask on)" in text, text


def test_keyboard_interactive_on_terminal(bed):
    ssh = bed.extra_sshd("ssh-kbdint", kbdint=True)
    run = password_run(bed, ssh, tty=True)
    try:
        run.tty_expect("Password: ")  # PAM's prompt, relayed
        run.tty_send(testbed.FTP_PASSWORD + "\n")
        run.wait_ready()
        text = run.stderr()
        assert "server accepts: publickey,keyboard-interactive" in text, text
        assert "authenticated with keyboard-interactive" in text, text
        assert_transfers(bed, run)
    finally:
        run.stop()


# --- ssh-agent ---------------------------------------------------------------

@pytest.fixture
def agent(bed):
    a = tunnel.Agent(bed)
    yield a
    a.stop()


def test_agent_identities_tried_in_turn(bed, authd, agent):
    """A real ssh-agent holding a refused key first, then the right one;
    no -i, no keys in $HOME: only the agent can log ftpssh in."""
    agent.add(authd.other_key, authd.user_key)
    assert agent.listing().count("ED25519") == 2
    run = start(bed, authd, identity=False, home=tunnel.empty_home(bed, "agent"),
                env={"SSH_AUTH_SOCK": agent.sock}, wait=False)
    try:
        run.wait_ready()
        assert "authenticated with ssh-agent key ftpssh-test-user" in run.stderr(), run.stderr()
        assert_transfers(bed, run)
    finally:
        run.stop()


def test_agent_without_the_key_then_key_file(bed, authd, agent):
    """An agent that holds only a refused key must not stop -i from
    working (users with an agent running are the common case)."""
    agent.add(authd.other_key)
    run = start(bed, authd, identity=authd.user_key, env={"SSH_AUTH_SOCK": agent.sock}, wait=False)
    try:
        run.wait_ready()
        assert "authenticated with key %s" % authd.user_key in run.stderr(), run.stderr()
        assert_transfers(bed, run)
    finally:
        run.stop()
