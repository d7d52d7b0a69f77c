"""Every cipher and MAC ftpssh's libssh2 offers, both directions, through
re-keys (issue 13).

The bundled libssh2 carries a patch (scripts/libssh2/patches/
0004-bulk-crypt.patch) that hands the cipher a whole packet in two calls
instead of one call per 16-byte block; how a packet is split depends on
the cipher (CTR, CBC with 8- or 16-byte blocks, AES-GCM's AAD and tag,
ChaCha20-Poly1305's own path) and on the MAC (etm: the length is not
encrypted; not etm: the MAC's length decides where the encrypted part of
a packet ends). So each case: a 4 MiB RETR and a 4 MiB STOR through an
sshd that re-keys every MiB (new keys and IVs mid-stream), sha256
compared on both sides, and sshd's log says the pair was the one in use.

By default each cipher runs with one MAC of each kind (etm and not), the
pairs chosen so that every MAC is used at least once, and the AEAD
ciphers with their implicit MAC; FTPSSH_CIPHER_MATRIX=full runs the
whole product (66 cases).
"""

import hashlib
import os
import subprocess

import pytest

from harness import clients, ftpssh

pytestmark = pytest.mark.ftpssh_only

SERVER = "vsftpd"
SIZE = 4 << 20

# libssh2 1.11.1's names (src/crypt.c, src/mac.c) that OpenSSH 9 also has;
# the test keeps those `ssh -Q` lists, i.e. what this sshd accepts.
CIPHERS = ["aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-cbc", "aes192-cbc",
           "aes256-cbc", "3des-cbc"]
AEAD = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
MACS = ["hmac-sha2-256", "hmac-sha2-512", "hmac-sha1", "hmac-sha1-96", "hmac-md5",
        "hmac-md5-96"]
ETM_MACS = ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
            "hmac-sha1-etm@openssh.com"]


def _ssh_q(what):
    try:
        out = subprocess.run(["ssh", "-Q", what], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.split())


def cases():
    full = os.environ.get("FTPSSH_CIPHER_MATRIX") == "full"
    out = []
    for i, c in enumerate(CIPHERS):
        macs = MACS + ETM_MACS if full else [MACS[i % len(MACS)], ETM_MACS[i % len(ETM_MACS)]]
        out += [(c, m) for m in macs]
    if not full:
        # the rotation above leaves no MAC out: check it stays so
        assert {m for _, m in out} == set(MACS + ETM_MACS)
    return out + [(c, None) for c in AEAD]


@pytest.fixture(scope="module")
def cipher_sshd(bed):
    have_c, have_m = _ssh_q("cipher"), _ssh_q("mac")
    if not have_c or not have_m:
        pytest.skip("ssh -Q cipher/mac gives nothing")
    ciphers = [c for c in CIPHERS + AEAD if c in have_c]
    macs = [m for m in MACS + ETM_MACS if m in have_m]
    ssh = bed.extra_sshd("ssh-ciphers", extra_config=[
        "Ciphers " + ",".join(ciphers), "MACs " + ",".join(macs), "RekeyLimit 1M"])
    return ssh, set(ciphers), set(macs)


@pytest.fixture(scope="module")
def files(bed):
    """(name, path, sha256) of a 4 MiB random file on the FTP server, and a
    local 4 MiB random file to upload with its sha256."""
    srv = bed.ftp_server(SERVER)
    made = []
    out = []
    for name in ("ciphers-down", "ciphers-up-src"):
        path = srv.file(name) if name == "ciphers-down" else bed.path(name)
        data = os.urandom(SIZE)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
        made.append(path)
        out.append((name, path, hashlib.sha256(data).hexdigest()))
    yield out
    for p in made:
        try:
            os.unlink(p)
        except OSError:
            pass


def rekeys(text):
    return text.count("SSH2_MSG_NEWKEYS received")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cipher,mac", cases(),
                         ids=["%s+%s" % (c.split("@")[0], (m or "aead").split("@")[0])
                              for c, m in cases()])
def test_cipher_mac_both_directions(bed, cipher_sshd, files, cipher, mac):
    if not ftpssh.libssh2_at_least(1, 11):
        pytest.skip("libssh2 older than 1.11 (make LIBSSH2=bundled)")
    ssh, ciphers, macs = cipher_sshd
    if cipher not in ciphers or (mac and mac not in macs):
        pytest.skip("this sshd lacks %s/%s" % (cipher, mac))
    (down, _, down_sha), (_, up_path, up_sha) = files
    srv = bed.ftp_server(SERVER)
    extra = ["-o", "Ciphers=" + cipher] + (["-o", "MACs=" + mac] if mac else [])
    mark = len(ssh.log_text())
    proxy = ftpssh.Ftpssh(bed, [srv], ssh=ssh, extra=extra)
    remote = "ciphers-up-%d" % os.getpid()
    try:
        ftp = clients.open_ftplib(proxy.target)
        ftp.sock.settimeout(30)
        try:
            h = hashlib.sha256()
            n = [0]

            def take(b):
                h.update(b)
                n[0] += len(b)
            ftp.retrbinary("RETR " + down, take, blocksize=1 << 16)
            assert n[0] == SIZE, "RETR: %d of %d bytes" % (n[0], SIZE)
            assert h.hexdigest() == down_sha, "RETR: the bytes differ"
            with open(up_path, "rb") as f:
                ftp.storbinary("STOR " + remote, f, blocksize=1 << 16)
            ftp.quit()
        finally:
            ftp.close()
        with open(srv.file(remote), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == up_sha, "STOR: the bytes differ"
        assert proxy.ssh_connections() == 1
        log = ssh.log_text()[mark:].replace("\r", "")
        for way in ("client->server", "server->client"):
            want = "kex: %s cipher: %s MAC: %s" % (way, cipher, mac or "<implicit>")
            assert want in log, "sshd did not use %s:\n%s" % (want, log[-2000:])
        assert rekeys(log) >= 3, "sshd re-keyed %d times: the test proves less" % rekeys(log)
    finally:
        proxy.stop()
        try:
            os.unlink(srv.file(remote))
        except OSError:
            pass
