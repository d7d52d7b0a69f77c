"""Host keys and algorithms the way OpenSSH users know them (issue 10,
parts 3 and 4), against sshd instances of this module's own:

- "hk-gw": the gateway, offering an ed25519 AND an ECDSA host key;
- "hk-impostor-ecdsa": another sshd with only an ECDSA key, and
  "hk-impostor-ed25519": another with a different ed25519 key (and
  ECDSA). The impostor scenario: known_hosts holds the gateway's real
  ed25519 key under the impostor's "[127.0.0.1]:PORT".

Host keys: known key types are offered first (known ed25519 only: ed25519
is negotiated though the server prefers to offer ECDSA too, and the other
way round); a known host never gets a key of another type, nor a changed
one, added by accept-new (exit 4, the file unchanged byte for byte);
@revoked refuses under every setting; @cert-authority is reported and the
plain key still checked; GlobalKnownHostsFile; a list of UserKnownHostsFile
entries (accept-new writes the first only); HostKeyAlias; accept-new with
HashKnownHosts=yes writes a hashed line ssh-keygen -F finds.

Algorithms: -Q lists what the build supports; a name it cannot use is exit
2 naming it and listing the build's names; +/-/^ forms and plain lists
connect, sshd's own log (LogLevel DEBUG1) naming the algorithm chosen.

Every run that connects moves data-1M through an FTP session, sha256
checked.
"""

import itertools
import os
import re
import subprocess

import pytest

from harness import clients, ftpssh, tunnel

pytestmark = pytest.mark.ftpssh_only

SERVER = "pyftpdlib"
HOSTKEY_REFUSED = 4
USAGE = 2
_names = itertools.count(1)


def pub_entry(path):
    """"type base64" of a public key file."""
    with open(path + ".pub") as f:
        return " ".join(f.read().split()[:2])


@pytest.fixture(scope="module")
def gw(bed):
    return bed.extra_sshd("hk-gw", host_key_types=("ed25519", "ecdsa"))


@pytest.fixture(scope="module")
def impostors(bed):
    return {
        "ecdsa-only": bed.extra_sshd("hk-impostor-ecdsa", host_key_types=("ecdsa",)),
        "other-ed25519": bed.extra_sshd("hk-impostor-ed25519", host_key_types=("ed25519", "ecdsa")),
    }


def kh_file(bed, text, tag="kh"):
    d = bed.path("kh-ssh")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "%s-%d" % (tag, next(_names)))
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    return path


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def start(bed, ssh, known_hosts, strict="yes", extra=(), wait=True, env=None):
    # -v: the log says which known_hosts line matched and what was chosen.
    # No global file of the machine's may decide a test unless the test
    # names one (ssh -G: the first value of an option wins).
    extra = ["-v"] + list(extra)
    if not any("GlobalKnownHostsFile" in a for a in extra):
        extra += ["-o", "GlobalKnownHostsFile=none"]
    return ftpssh.Ftpssh(bed, [bed.ftp_server(SERVER)], ssh=ssh, known_hosts=known_hosts,
                         strict=strict, extra=extra, wait=wait, env=env)


def assert_transfers(bed, run):
    clients.assert_retr_1m(bed, run)


def connects(bed, ssh, known_hosts, **kw):
    """Start, transfer, stop; ftpssh's stderr."""
    run = start(bed, ssh, known_hosts, **kw)
    try:
        assert_transfers(bed, run)
        return run.stderr()
    finally:
        run.stop()


def refused(bed, ssh, known_hosts, status=HOSTKEY_REFUSED, **kw):
    run = start(bed, ssh, known_hosts, wait=False, **kw)
    rc = run.wait_exit()
    text = run.stderr()
    assert rc == status, "expected exit status %d, got %s:\n%s" % (status, rc, text)
    assert not run.announcements(), "announced a listener anyway:\n" + text
    run.assert_clean()
    return text


def sshd_log_since(ssh, offset):
    return ssh.log_text()[offset:].replace("\r", "")


# --- which host key algorithm is negotiated ---------------------------------

@pytest.mark.parametrize("known", ["ed25519", "ecdsa"])
def test_known_key_type_is_negotiated(bed, gw, known):
    """known_hosts holds one of the gateway's two keys (ssh-keyscan -t
    ed25519 gives just that): ftpssh offers that type first and connects
    under StrictHostKeyChecking=yes; sshd's log shows the type chosen."""
    kh = kh_file(bed, "[127.0.0.1]:%d %s\n" % (gw.port, pub_entry(gw.host_keys[known])))
    before = read_bytes(kh)
    mark = len(gw.log_text())
    text = connects(bed, gw, kh)
    want = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256"}[known]
    log = sshd_log_since(gw, mark)
    chosen = re.findall(r"kex: host key algorithm: (\S+)", log)
    assert chosen and chosen[0] == want, "sshd negotiated %s, want %s:\n%s" % (chosen, want, log[-3000:])
    assert "host key for [127.0.0.1]:%d matches %s:1" % (gw.port, kh) in text, text
    assert read_bytes(kh) == before


# --- the impostor: a known host presenting another key -----------------------

@pytest.mark.parametrize("kind,strict", [("ecdsa-only", "accept-new"), ("other-ed25519", "accept-new"),
                                         ("ecdsa-only", "no")])
def test_impostor_refused_and_nothing_written(bed, gw, impostors, kind, strict):
    """known_hosts holds the real gateway's ed25519 key for the port where
    another sshd listens: refused loudly (exit 4), naming the file and line
    of the known key; the file is unchanged byte for byte."""
    imp = impostors[kind]
    kh = kh_file(bed, "# the real gateway\n[127.0.0.1]:%d %s\n" % (imp.port, gw.host_key_entry))
    before = read_bytes(kh)
    text = refused(bed, imp, kh, strict=strict)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text and "@@@@@@@@" in text, text
    assert "%s:2" % kh in text, "the known key's file:line is not named:\n" + text
    assert tunnel.fingerprint(imp.host_key + ".pub") in text, text
    assert "ssh-keygen -R '[127.0.0.1]:%d'" % imp.port in text, text
    assert "Permanently added" not in text, text
    assert read_bytes(kh) == before, "known_hosts changed:\n%r\n%r" % (before, read_bytes(kh))


def test_impostor_refused_by_openssh_too(bed, gw, impostors):
    """The same file with ssh itself (the reference): refused as well."""
    imp = impostors["other-ed25519"]
    kh = kh_file(bed, "[127.0.0.1]:%d %s\n" % (imp.port, gw.host_key_entry))
    r = subprocess.run(["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + kh,
                        "-o", "GlobalKnownHostsFile=none", "-o", "StrictHostKeyChecking=accept-new",
                        "-i", imp.user_key, "-p", str(imp.port), "%s@127.0.0.1" % imp.login, "true"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert r.returncode != 0 and b"HAS CHANGED" in r.stdout, r.stdout.decode()


# --- markers -----------------------------------------------------------------

@pytest.mark.parametrize("strict", ["yes", "no"])
def test_revoked_key_refused(bed, gw, strict):
    entry = gw.host_key_entry
    kh = kh_file(bed, "[127.0.0.1]:%d %s\n@revoked * %s\n" % (gw.port, entry, entry))
    before = read_bytes(kh)
    text = refused(bed, gw, kh, strict=strict)
    assert "REVOKED HOST KEY" in text and "%s:2" % kh in text, text
    assert read_bytes(kh) == before


def test_revoked_other_key_does_not_refuse(bed, gw):
    """@revoked names one key: the gateway's own (not revoked) still works."""
    kh = kh_file(bed, "@revoked * %s\n[127.0.0.1]:%d %s\n" % (
        pub_entry(gw.other_key), gw.port, gw.host_key_entry))
    connects(bed, gw, kh)


def test_cert_authority_reported_plain_key_checked(bed, gw):
    ca = tunnel.make_key(bed, "hk-ca-%d" % next(_names), "ed25519")
    kh = kh_file(bed, "@cert-authority [127.0.0.1]:%d %s\n[127.0.0.1]:%d %s\n" % (
        gw.port, pub_entry(ca), gw.port, gw.host_key_entry))
    text = connects(bed, gw, kh)
    assert "libssh2 cannot check host certificates; checking plain keys" in text, text
    assert "matches %s:2" % kh in text, text
    # The CA line alone does not make the host known.
    kh2 = kh_file(bed, "@cert-authority [127.0.0.1]:%d %s\n" % (gw.port, pub_entry(ca)))
    text = refused(bed, gw, kh2)
    assert "Host key verification failed" in text, text


# --- which files -------------------------------------------------------------

def test_global_known_hosts_file(bed, gw):
    user = kh_file(bed, "", "empty-user")
    glob = kh_file(bed, "[127.0.0.1]:%d %s\n" % (gw.port, gw.host_key_entry), "global")
    text = connects(bed, gw, user, extra=["-o", "GlobalKnownHostsFile=%s" % glob])
    assert "matches %s:1" % glob in text, text
    assert read_bytes(user) == b""
    # And without it: unknown, and the message names every file looked in.
    text = refused(bed, gw, user, extra=["-o", "GlobalKnownHostsFile=%s" % kh_file(bed, "", "g0")])
    assert user in text, text


def test_list_of_user_files(bed, gw):
    first = kh_file(bed, "[127.0.0.1]:1 %s\n" % gw.host_key_entry, "first")
    second = kh_file(bed, "[127.0.0.1]:%d %s\n" % (gw.port, gw.host_key_entry), "second")
    text = connects(bed, gw, "%s %s" % (first, second))
    assert "matches %s:1" % second in text, text
    # accept-new records in the first file only
    a, b = kh_file(bed, None, "new-a"), kh_file(bed, "", "new-b")
    connects(bed, gw, "%s %s" % (a, b), strict="accept-new")
    assert open(a).read() == "[127.0.0.1]:%d %s\n" % (gw.port, gw.host_key_entry)
    assert read_bytes(b) == b""


def test_host_key_alias(bed, gw):
    kh = kh_file(bed, "gateway-alias %s\n" % gw.host_key_entry)
    text = connects(bed, gw, kh, extra=["-o", "HostKeyAlias=gateway-alias"])
    assert "host key for gateway-alias matches %s:1" % kh in text, text
    # The alias replaces the name: a "[127.0.0.1]:PORT" entry no longer counts.
    kh2 = kh_file(bed, "[127.0.0.1]:%d %s\n" % (gw.port, gw.host_key_entry))
    text = refused(bed, gw, kh2, extra=["-o", "HostKeyAlias=gateway-alias"])
    assert "HostKeyAlias gateway-alias" in text, text


def test_accept_new_hashed(bed, gw):
    kh = kh_file(bed, None, "hashed")
    text = connects(bed, gw, kh, strict="accept-new", extra=["-o", "HashKnownHosts=yes"])
    assert "Permanently added" in text and "(hashed name)" in text, text
    line = open(kh).read()
    assert line.startswith("|1|") and "127.0.0.1" not in line and line.count("\n") == 1, line
    assert line.split()[1:] == gw.host_key_entry.split(), line
    found = subprocess.run(["ssh-keygen", "-F", "[127.0.0.1]:%d" % gw.port, "-f", kh],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert found.returncode == 0 and gw.host_key_entry.split()[1] in found.stdout.decode(), \
        found.stdout.decode()
    # now known: =yes connects and adds nothing
    before = read_bytes(kh)
    connects(bed, gw, kh)
    assert read_bytes(kh) == before


# --- algorithms --------------------------------------------------------------

def run_cli(*args, env=None):
    r = subprocess.run(ftpssh.wrap() + [ftpssh.binary()] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
                                **(env or {})))
    return r.returncode, r.stdout.decode(), r.stderr.decode()


@pytest.mark.parametrize("query,must", [("cipher", "aes128-ctr"), ("mac", "hmac-sha2-256"),
                                        ("kex", "curve25519-sha256"), ("key", "ssh-ed25519"),
                                        ("Ciphers", "aes256-ctr")])
def test_query_lists(query, must):
    rc, out, err = run_cli("-Q", query)
    assert rc == 0, err
    names = out.split("\n")
    assert names[-1] == "" and must in names, out
    for n in names[:-1]:
        assert re.fullmatch(r"[a-z0-9@.+-]+", n), "odd name %r in:\n%s" % (n, out)
        assert n != "none" and "-cert-v01@" not in n and not n.startswith(("ext-info", "kex-strict")), out
    assert not ftpssh.SANITIZER.search(err), err


def test_query_unknown_is_usage_error():
    rc, out, err = run_cli("-Q", "nonsense")
    assert rc == USAGE and "nonsense" in err, err


@pytest.mark.parametrize("option,value,bad", [
    ("Ciphers", "no-such-cipher", "no-such-cipher"),
    ("Ciphers", "+aes128-ctr,no-such-cipher", "no-such-cipher"),
    ("MACs", "^hmac-nope", "hmac-nope"),
    ("KexAlgorithms", "nope-kex", "nope-kex"),
    ("HostKeyAlgorithms", "ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519-cert-v01@openssh.com"),
])
@pytest.mark.parametrize("via", ["ssh", "no-ssh"])
def test_unusable_algorithm_is_usage_error(bed, gw, option, value, bad, via):
    """Exit 2 before connecting, naming the name. Without ssh (FTPSSH_SSH
    naming nothing) ftpssh's own check lists the build's names; with ssh,
    a name ssh does not know is ssh's own refusal (its message names it),
    one ssh knows but this build lacks (host certificates) ftpssh's."""
    _, supported, _ = run_cli("-Q", option)
    env = {"FTPSSH_SSH": bed.path("no-such-ssh")} if via == "no-ssh" else {}
    rc, out, err = run_cli("-o", "%s=%s" % (option, value), "-p", str(gw.port), "127.0.0.1",
                           env=env)
    assert rc == USAGE, "status %d:\n%s" % (rc, err)
    if via == "ssh" and "OpenSSH refused" in err:
        assert bad in err and "-cert-v01@" not in bad, err
        return
    assert '"%s" is not supported by this build' % bad in err, err
    assert ",".join(supported.split()) in err, "the supported list is not given:\n" + err


@pytest.mark.parametrize("via", ["ssh", "no-ssh"])
def test_removing_everything_is_usage_error(bed, via):
    env = {"FTPSSH_SSH": bed.path("no-such-ssh")} if via == "no-ssh" else {}
    rc, out, err = run_cli("-o", "Ciphers=-*", "127.0.0.1", env=env)
    assert rc == USAGE and "leaves no algorithm" in err, err


@pytest.mark.parametrize("option,value,log_re,want", [
    ("Ciphers", "aes256-ctr", r"kex: client->server cipher: (\S+)", "aes256-ctr"),
    ("Ciphers", "^aes192-ctr", r"kex: client->server cipher: (\S+)", "aes192-ctr"),
    # "-": ssh -G removes it from ssh's own defaults, in ssh's order
    ("Ciphers", "-aes128-ctr", r"kex: client->server cipher: (\S+)", None),
    ("MACs", "hmac-sha2-512", r"kex: client->server cipher: \S+ MAC: (\S+)", "hmac-sha2-512"),
    # (not ecdh-sha2-*: libssh2 1.11.1 leaks its ephemeral key, which ASan reports)
    ("KexAlgorithms", "curve25519-sha256@libssh.org", r"kex: algorithm: (\S+)",
     "curve25519-sha256@libssh.org"),
    ("HostKeyAlgorithms", "-ecdsa-sha2-nistp521", r"kex: host key algorithm: (\S+)", "ssh-ed25519"),
])
def test_algorithm_choice_reaches_sshd(bed, gw, option, value, log_re, want):
    if want is None:
        # the first name of ssh's resolved list that this build has
        g = subprocess.run(["ssh", "-G", "-o", "%s=%s" % (option, value), "127.0.0.1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=30).stdout.decode()
        resolved = [l.split(None, 1)[1] for l in g.splitlines()
                    if l.lower().startswith(option.lower() + " ")][0].split(",")
        _, supported, _ = run_cli("-Q", option)
        want = [n for n in resolved if n in supported.split()][0]
        assert want != value.lstrip("-"), resolved
    kh = kh_file(bed, "[127.0.0.1]:%d %s\n" % (gw.port, gw.host_key_entry))
    mark = len(gw.log_text())
    extra = ["-o", "%s=%s" % (option, value)]
    if option == "MACs":
        # the default cipher is AES-GCM, whose MAC is implicit
        extra += ["-o", "Ciphers=aes128-ctr"]
    text = connects(bed, gw, kh, extra=extra)
    log = sshd_log_since(gw, mark)
    got = re.findall(log_re, log)
    assert got and got[0] == want, "sshd chose %s, want %s (-o %s=%s):\n%s\nftpssh:\n%s" % (
        got, want, option, value, log[-3000:], text)


def gcm_lsan_env(bed):
    """libssh2 1.11.1 leaks the MAC key it derives in each key exchange
    when the cipher is AES-GCM (kex.c, curve25519_sha256: mac->init of the
    integrated MAC leaves free_key unset, 48 bytes per direction), which
    ftpssh cannot free. Suppress exactly leaks from that function."""
    path = bed.path("lsan-libssh2-gcm.supp")
    with open(path, "w") as f:
        f.write("# libssh2 1.11.1: AES-GCM MAC key leaked per key exchange\n"
                "leak:curve25519_sha256\n")
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    return {"LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % path,
            "ASAN_OPTIONS": asan + ":fast_unwind_on_malloc=0"}


@pytest.mark.parametrize("cipher", ["aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"])
def test_newer_cipher_connects_or_is_refused_by_name(bed, gw, cipher):
    """The issue's example: with a libssh2 that has the cipher (1.11) it is
    used, as sshd's log shows; without (1.10) it is exit 2 naming it, never
    a silent connection with the defaults."""
    _, supported, _ = run_cli("-Q", "cipher")
    if cipher not in supported.split():
        rc, out, err = run_cli("-o", "Ciphers=" + cipher, "-p", str(gw.port), "127.0.0.1")
        assert rc == USAGE and '"%s" is not supported by this build' % cipher in err, err
        return
    kh = kh_file(bed, "[127.0.0.1]:%d %s\n" % (gw.port, gw.host_key_entry))
    mark = len(gw.log_text())
    connects(bed, gw, kh, extra=["-o", "Ciphers=" + cipher], env=gcm_lsan_env(bed))
    got = re.findall(r"kex: client->server cipher: (\S+)", sshd_log_since(gw, mark))
    assert got and got[0] == cipher, got
