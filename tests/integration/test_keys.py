"""Every key an ssh user has, against OpenSSH with Debian's defaults: RSA
(rsa-sha2 signatures), ECDSA and ed25519 from files and from a real
ssh-agent; OpenSSH user certificates (KEY-cert.pub next to KEY,
CertificateFile, held by the agent) against an sshd that trusts a user CA
and does NOT list the bare key; identity selection as ssh does it
(IdentitiesOnly, agent before files, BatchMode); a hardened sshd (etm MACs,
AES-GCM and ChaCha20-Poly1305 only); strict key exchange.

Each test that logs in does an FTP transfer with its sha256 checked, and
where it matters reads sshd's own log for what was really used. The sshds
are this module's own (Testbed.extra_sshd), so nothing here touches the
shared one.
"""

import hashlib
import os
import shutil
import subprocess
import time

import pytest

from harness import clients, ftpssh, testbed, tunnel

pytestmark = pytest.mark.ftpssh_only

SERVER = "pyftpdlib"
AUTH_FAILED = 5
PASSPHRASE = "correct horse 7"


def needs_111():
    if not ftpssh.libssh2_at_least(1, 11):
        pytest.skip("libssh2 %s: rsa-sha2, certificates and strict kex need 1.11 "
                    "(build with make LIBSSH2=bundled)" % ".".join(map(str, ftpssh.libssh2_version()[0])))


@pytest.fixture(scope="module")
def keysd(bed):
    """Debian's default sshd settings, publickey only, plus a user CA."""
    d = bed.path("keys-ca")
    os.makedirs(d, exist_ok=True)
    ca = os.path.join(d, "user_ca")
    if not os.path.exists(ca):
        testbed._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ftpssh-test-ca", "-f", ca])
    # DEBUG2: sshd logs the client's KEXINIT proposal (strict kex) and the
    # signature algorithm of every key offered.
    ssh = bed.extra_sshd("keys", extra_config=["TrustedUserCAKeys %s.pub" % ca], log_level="DEBUG2")
    ssh.user_ca = ca
    return ssh


def key(bed, name, keytype, passphrase="", authorize=None, bits=None):
    path = os.path.join(bed.path("keys"), name)
    if os.path.exists(path):
        return path
    return tunnel.make_key(bed, name, keytype, passphrase, authorize=authorize, bits=bits)


def certify(ssh, keypath, principal=None, ident="ftpssh-test-cert"):
    """Sign KEYPATH.pub with the sshd's user CA: KEYPATH-cert.pub."""
    testbed._run(["ssh-keygen", "-q", "-s", ssh.user_ca, "-I", ident, "-n", principal or ssh.login,
                  "-V", "-5m:+1h", "-z", "7", keypath + ".pub"])
    return keypath + "-cert.pub"


@pytest.fixture
def agent(bed):
    a = tunnel.Agent(bed)
    yield a
    a.stop()


def start(bed, ssh, **kw):
    kw.setdefault("extra", [])
    kw["extra"] = ["-v"] + list(kw["extra"])
    kw.setdefault("home", tunnel.empty_home(bed, "keys-%d-%d" % (os.getpid(), next(_n))))
    return ftpssh.Ftpssh(bed, [bed.ftp_server(SERVER)], ssh=ssh, **kw)


_n = iter(range(1, 10000))


def transfer(bed, run):
    """A real FTP download through RUN, sha256 checked."""
    ftp = clients.open_ftplib(run.target)
    try:
        h = hashlib.sha256()
        ftp.retrbinary("RETR data-1M", h.update, blocksize=1 << 16)
        assert h.hexdigest() == bed.data["1M"].sha256, "RETR data-1M through %s: wrong sha256" % run.name
    finally:
        ftp.quit()
    run.assert_alive()


def log_since(ssh, mark):
    return ssh.log_text()[mark:].replace("\r", "")


def login_and_transfer(bed, ssh, **kw):
    """Start ftpssh, transfer, stop; ftpssh's stderr and sshd's log of it."""
    mark = len(ssh.log_text())
    run = start(bed, ssh, **kw)
    try:
        transfer(bed, run)
        text = run.stderr()
    finally:
        run.stop()
    return text, log_since(ssh, mark)


def expect_exit(run, status, what, timeout=20):
    rc = run.wait_exit(timeout=timeout)
    text = run.stderr()
    assert rc == status, "%s: expected exit status %d, got %s:\n%s" % (what, status, rc, text)
    assert not run.announcements(), "%s: ftpssh announced a listener anyway:\n%s" % (what, text)
    run.assert_clean()
    return text


# --- key types, from files and from the agent ---------------------------------

KEYTYPES = [("rsa", 2048, "RSA"), ("ecdsa", None, "ECDSA"), ("ed25519", None, "ED25519")]


@pytest.mark.parametrize("keytype,bits,label", KEYTYPES, ids=[k[0] for k in KEYTYPES])
def test_key_file(bed, keysd, keytype, bits, label):
    if keytype == "rsa":
        needs_111()
    k = key(bed, "keys_file_" + keytype, keytype, authorize=keysd, bits=bits)
    env = tunnel.lsan_env(bed) if keytype == "ecdsa" else None
    text, log = login_and_transfer(bed, keysd, identity=k, env=env)
    assert "authenticated with key %s" % k in text, text
    assert "Accepted publickey for %s" % keysd.login in log and " %s SHA256:" % label in log, log[-3000:]
    if keytype == "rsa":
        # rsa-sha2 (RFC 8332), never ssh-rsa: OpenSSH 8.8+ refuses SHA-1
        assert "pkalg rsa-sha2-512" in log or "pkalg rsa-sha2-256" in log, log[-3000:]
        assert "pkalg ssh-rsa " not in log, log[-3000:]


@pytest.mark.parametrize("keytype,bits,label", KEYTYPES, ids=[k[0] for k in KEYTYPES])
def test_key_in_agent(bed, keysd, agent, keytype, bits, label):
    if keytype == "rsa":
        needs_111()
    k = key(bed, "keys_agent_" + keytype, keytype, authorize=keysd, bits=bits)
    agent.add(k)
    text, log = login_and_transfer(bed, keysd, identity=False, env={"SSH_AUTH_SOCK": agent.sock})
    assert "authenticated with ssh-agent key ftpssh-test-keys_agent_%s" % keytype in text, text
    assert "Accepted publickey for %s" % keysd.login in log and " %s SHA256:" % label in log, log[-3000:]
    if keytype == "rsa":
        assert "pkalg rsa-sha2-512" in log or "pkalg rsa-sha2-256" in log, log[-3000:]


# --- certificates ------------------------------------------------------------------

def cert_key(bed, keysd, name, passphrase=""):
    """An ed25519 key NOT in authorized_keys, with a certificate beside it."""
    k = key(bed, name, "ed25519", passphrase)
    if not os.path.exists(k + "-cert.pub"):
        certify(keysd, k)
    return k


def assert_cert_login(log, keysd):
    assert "Accepted publickey for %s" % keysd.login in log, log[-3000:]
    assert "ED25519-CERT SHA256:" in log and "ID ftpssh-test-cert (serial 7)" in log, log[-3000:]


def test_certificate_found_next_to_key(bed, keysd):
    """-i KEY with KEY-cert.pub beside it: ssh offers the bare key, then
    the certificate; only the certificate is authorised."""
    needs_111()
    k = cert_key(bed, keysd, "keys_cert_beside")
    text, log = login_and_transfer(bed, keysd, identity=k)
    assert "authenticated with certificate %s-cert.pub" % k in text, text
    assert_cert_login(log, keysd)


def test_bare_key_alone_is_refused(bed, keysd):
    """The control for the test above: the same key without its
    certificate is not authorised (so the certificate is what logs in)."""
    k = cert_key(bed, keysd, "keys_cert_beside")
    bare = os.path.join(bed.path("keys"), "keys_cert_bare")
    if not os.path.exists(bare):
        shutil.copyfile(k, bare)
        os.chmod(bare, 0o600)
    run = start(bed, keysd, identity=bare, wait=False)
    text = expect_exit(run, AUTH_FAILED, "bare key without its certificate")
    assert "%s (refused by the server)" % bare in text, text


def test_certificate_file_option(bed, keysd):
    """CertificateFile names a certificate kept elsewhere; -i gives the key."""
    needs_111()
    k = key(bed, "keys_cert_option", "ed25519")
    d = bed.path("keys-certs")
    os.makedirs(d, exist_ok=True)
    cert = os.path.join(d, "elsewhere-cert.pub")
    if not os.path.exists(cert):
        shutil.move(certify(keysd, k), cert)
    text, log = login_and_transfer(bed, keysd, identity=k, extra=["-o", "CertificateFile=%s" % cert])
    assert "authenticated with certificate %s" % cert in text, text
    assert_cert_login(log, keysd)


def test_certificate_in_agent(bed, keysd, agent):
    """ssh-add KEY loads KEY-cert.pub too; the agent signs for the
    certificate (no key file anywhere for ftpssh)."""
    needs_111()
    k = cert_key(bed, keysd, "keys_cert_agent")
    agent.add(k)
    assert "ED25519-CERT" in agent.listing(), agent.listing()
    text, log = login_and_transfer(bed, keysd, identity=False, env={"SSH_AUTH_SOCK": agent.sock})
    assert "authenticated with ssh-agent key ftpssh-test-keys_cert_agent" in text, text
    assert_cert_login(log, keysd)


# --- identity selection as ssh does it -----------------------------------------

@pytest.fixture
def crowded_agent(bed, agent):
    """An agent holding 7 keys the server does not know."""
    keys = [key(bed, "keys_crowd_%d" % i, "ed25519") for i in range(7)]
    agent.add(*keys)
    return agent


def test_many_agent_keys_exhaust_maxauthtries(bed, keysd, crowded_agent):
    """Without IdentitiesOnly, ssh (and ftpssh) offer the 7 agent keys
    first; sshd (MaxAuthTries 6) hangs up before -i KEY's turn. The
    message says so and names the cure."""
    k = key(bed, "keys_crowd_target", "ed25519", authorize=keysd)
    run = start(bed, keysd, identity=k, env={"SSH_AUTH_SOCK": crowded_agent.sock}, wait=False)
    text = expect_exit(run, AUTH_FAILED, "7 agent keys before -i")
    assert "Too many authentication failures" in text, text
    assert "IdentitiesOnly=yes" in text, text


def test_identities_only(bed, keysd, crowded_agent):
    k = key(bed, "keys_crowd_target", "ed25519", authorize=keysd)
    text, log = login_and_transfer(bed, keysd, identity=k, env={"SSH_AUTH_SOCK": crowded_agent.sock},
                                   extra=["-o", "IdentitiesOnly=yes"])
    assert "authenticated with key %s" % k in text, text
    # the agent's keys were never offered: one key, accepted at once
    assert log.count("Failed publickey") == 0, log[-3000:]


def test_agent_signs_for_a_configured_encrypted_key(bed, keysd, agent):
    """ssh's order: an agent key that is also an -i file is tried first,
    through the agent, so its passphrase is never needed (no terminal here:
    asking would fail)."""
    k = key(bed, "keys_enc_in_agent", "ed25519", PASSPHRASE, authorize=keysd)
    plain = os.path.join(bed.path("keys"), "keys_enc_in_agent_plain")
    if not os.path.exists(plain):  # the agent gets the key without a passphrase prompt
        shutil.copyfile(k, plain)
        os.chmod(plain, 0o600)
        testbed._run(["ssh-keygen", "-q", "-p", "-P", PASSPHRASE, "-N", "", "-f", plain])
    agent.add(plain)
    text, _ = login_and_transfer(bed, keysd, identity=k, extra=["-o", "IdentitiesOnly=yes"],
                                 env={"SSH_AUTH_SOCK": agent.sock})
    assert "authenticated with ssh-agent key %s" % k in text, text
    assert "passphrase" not in text, text


def test_batch_mode_encrypted_key_no_agent(bed):
    """BatchMode: nothing is asked, not even with a terminal there; the
    key the server would take needs a passphrase, the password is not
    asked either: exit 5 at once, saying why."""
    ssh = bed.extra_sshd("keys-pw", password_auth=True)
    k = key(bed, "keys_batch_enc", "ed25519", PASSPHRASE, authorize=ssh)
    t0 = time.monotonic()
    run = start(bed, ssh, identity=k, tty=True, wait=False, extra=["-o", "BatchMode=yes"])
    text = expect_exit(run, AUTH_FAILED, "BatchMode, encrypted key")
    took = time.monotonic() - t0
    assert took < 15, "BatchMode failure took %.1fs" % took
    assert "%s (passphrase needed; BatchMode does not ask for one)" % k in text, text
    assert "password (not asked: BatchMode)" in text, text
    assert "passphrase for key" not in run.tty_text() and "password:" not in run.tty_text(), run.tty_text()


def test_messages_say_what_happened_to_each_identity(bed, keysd):
    """A missing file, a directory, a key the server refuses: each named
    with its reason; no RSA hint when no RSA key was tried."""
    stranger = key(bed, "keys_stranger", "ed25519")
    missing = os.path.join(bed.path("keys"), "no-such-key")
    run = start(bed, keysd, identity=[missing, bed.path("keys"), stranger], wait=False)
    text = expect_exit(run, AUTH_FAILED, "no usable identity")
    # ssh -G itself warns about (and leaves out) a missing identity file,
    # as ssh does; without ssh, ftpssh names it
    assert ("%s (no such file)" % missing in text or
            "Identity file %s not accessible: No such file or directory" % missing in text), text
    assert "%s (Is a directory)" % bed.path("keys") in text, text
    assert "%s (refused by the server)" % stranger in text, text
    assert "RSA" not in text, text
    assert "USERAUTH" not in text and "combination invalid" not in text, text


def test_preferred_authentications_and_pubkey_off(bed):
    """PreferredAuthentications=password and PubkeyAuthentication=no skip
    the (working) key; with no terminal the password cannot be asked."""
    ssh = bed.extra_sshd("keys-pw", password_auth=True)
    for opts in (["PreferredAuthentications=password"], ["PubkeyAuthentication=no"]):
        extra = []
        for o in opts:
            extra += ["-o", o]
        run = start(bed, ssh, identity=ssh.user_key, wait=False, extra=extra)
        text = expect_exit(run, AUTH_FAILED, " ".join(opts))
        assert "tried: password (no terminal to ask on)" in text, text


# --- algorithms --------------------------------------------------------------------

HARDENED = [
    "Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com",
    "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com",
    "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
    "HostKeyAlgorithms ssh-ed25519",
]


@pytest.mark.parametrize("cipher", ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com",
                                    "aes128-gcm@openssh.com"])
def test_hardened_server_aead_ciphers(bed, cipher):
    needs_111()
    ssh = bed.extra_sshd("keys-hardened", extra_config=HARDENED)
    text, log = login_and_transfer(bed, ssh, extra=["-o", "Ciphers=%s" % cipher])
    assert "cipher %s" % cipher in text, text
    assert "kex: client->server cipher: %s MAC: <implicit>" % cipher in log, log[-3000:]


def test_hardened_server_etm_macs(bed):
    """etm MACs only (with CTR ciphers): ftpssh's default choice works."""
    needs_111()
    ssh = bed.extra_sshd("keys-etm", extra_config=[
        "Ciphers aes256-ctr,aes128-ctr",
        "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com"])
    text, log = login_and_transfer(bed, ssh)
    assert "-etm@openssh.com" in text.split("SSH handshake done", 1)[1].split("\n", 1)[0], text
    assert "MAC: hmac-sha2-512-etm@openssh.com" in log or \
        "MAC: hmac-sha2-256-etm@openssh.com" in log, log[-3000:]


def test_strict_kex(bed, keysd):
    """Terrapin countermeasure: ftpssh offers kex-strict-c-v00@openssh.com
    and sshd offers kex-strict-s-v00: both sides then use strict kex.
    sshd at DEBUG2 logs the client's KEXINIT proposal."""
    needs_111()
    k = key(bed, "keys_file_ed25519", "ed25519", authorize=keysd)
    _, log = login_and_transfer(bed, keysd, identity=k)
    peer = log.split("peer client KEXINIT proposal", 1)
    assert len(peer) == 2, log[-3000:]
    kex_line = [ln for ln in peer[1].splitlines() if "KEX algorithms:" in ln][0]
    assert "kex-strict-c-v00@openssh.com" in kex_line, kex_line
    local = log.split("local server KEXINIT proposal", 1)[1]
    assert "kex-strict-s-v00@openssh.com" in local.split("peer client", 1)[0], local[:2000]


# --- keyboard-interactive: server text made printable, answers keyed by question --

HOSTILE = "Welcome\x1b]0;pwned\x07\x1b[2J\u009b31m caf\u00e9 \u2713"
HOSTILE_SHOWN = "Welcome\\033]0;pwned\\007\\033[2J\\302\\23331m caf\u00e9 \u2713"


@pytest.fixture
def pam_kbdint(bed):
    """An sshd doing keyboard-interactive through a PAM service of its own:
    pam_echo sends the text of a file as the instruction (PAM_TEXT_INFO),
    then pam_unix asks for the password."""
    service = "ftpssh-test-kbdint-%d" % os.getpid()
    info = bed.path("kbdint-info.txt")
    with open(info, "w", encoding="utf-8") as f:
        f.write(HOSTILE)
    pam = "/etc/pam.d/" + service
    with open(pam, "w") as f:
        f.write("auth required pam_echo.so file=%s\nauth required pam_unix.so\n"
                "account required pam_permit.so\nsession required pam_permit.so\n"
                "password required pam_deny.so\n" % info)
    try:
        ssh = bed.extra_sshd("keys-kbdint", kbdint=True, pam_service=service)
        ssh.info_file = info
        yield ssh
    finally:
        os.unlink(pam)


def test_kbdint_text_sanitised_and_answers_keyed_by_question(bed, pam_kbdint):
    ssh = pam_kbdint
    run = start(bed, ssh, identity=False, login=testbed.FTP_USER, use_l_option=True, tty=True,
                wait=False)
    try:
        shown = run.tty_expect("Password: ")
        assert "\x1b" not in shown and "\x07" not in shown and "\u009b" not in shown, repr(shown)
        assert HOSTILE_SHOWN in shown, repr(shown)
        run.tty_send(testbed.FTP_PASSWORD + "\n")
        run.wait_ready()
        assert "authenticated with keyboard-interactive" in run.stderr(), run.stderr()
        transfer(bed, run)

        # Same question on reconnect: the remembered answer is given.
        assert ssh.kill_connections(), "no sshd connection process found to kill"
        tunnel.wait_for(lambda: run.stderr().count(" is up") >= 2, 15, "a reconnect", run)
        transfer(bed, run)

        # The server changes its question: the old answer is not replayed
        # (the user never saw this one), so the login fails: exit 5.
        with open(ssh.info_file, "w") as f:
            f.write("Enter the code we sent to your phone")
        assert ssh.kill_connections(), "no sshd connection process found to kill"
        rc = run.wait_exit(timeout=30)
        text = run.stderr()
        assert rc == AUTH_FAILED, "expected exit 5 after the question changed, got %s:\n%s" % (rc, text)
        assert "changed since it was answered" in text, text
        assert run.tty_text().count("Password: ") == 1, repr(run.tty_text())
    finally:
        if run.alive():
            run.stop(check=False)
