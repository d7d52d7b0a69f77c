"""AUTH TLS through ftpssh (issue 5). The SSH tunnel already encrypts,
and ftpssh must read the control stream, so a client's AUTH TLS / AUTH
SSL is answered by ftpssh itself with
"534 ftpssh: the link is already protected by SSH; continue without TLS"
and never reaches the server; the session goes on in plain FTP inside
the tunnel, and AUTH lines are removed from the FEAT list the client sees.

Per real server (the shared ftpssh): AUTH TLS, AUTH SSL and a lower-case
auth get the 534, then a plain login and a 1 MiB RETR work; curl
--ssl-reqd fails (exit 64) with the 534 text in its output and without
having sent USER/PASS in the clear; curl --ssl (opportunistic) and lftp
with its default ftp:ssl-allow fall back to plain and transfer; lftp with
ftp:ssl-force fails naming the 534.

Against a stub server whose FEAT advertises TLS in several shapes: the
client's FEAT has no AUTH line left, every other feature (AUTHX-NOT-TLS
included) is kept, and the stub never received an AUTH command.
"""

import ftplib
import hashlib
import re
import subprocess

import pytest

from harness import clients, ftpssh, stubftp, testbed

pytestmark = pytest.mark.ftpssh_only

REFUSAL = "534 ftpssh: the link is already protected by SSH; continue without TLS"
AUTH_FEAT = re.compile(r"^\s*AUTH(\s|$)", re.IGNORECASE)


def expect_534(ftp, line):
    with pytest.raises(ftplib.error_perm) as e:
        ftp.sendcmd(line)
    assert str(e.value) == REFUSAL, "%r answered %r, not ftpssh's refusal\n%s" % (
        line, str(e.value), ftp.transcript())


def test_auth_refused_then_plain_login(bed, server, proxy):
    ftp = clients.open_ftplib(proxy.target, login=False)
    try:
        for line in ("AUTH TLS", "AUTH SSL", "auth tls", "AUTH TLS-C"):
            expect_534(ftp, line)
        ftp.login(testbed.FTP_USER, testbed.FTP_PASSWORD)
        src = bed.data["1M"]
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + src.name, h.update, blocksize=1 << 16)
        assert h.hexdigest() == src.sha256, "RETR after the refused AUTH: content differs"
        expect_534(ftp, "AUTH TLS")  # logged in: still refused, session intact
        feat = ftp.sendcmd("FEAT").splitlines()
        assert not [l for l in feat[1:-1] if AUTH_FEAT.match(l)], "FEAT still lists AUTH:\n%s" % feat
        assert ftp.voidcmd("NOOP").startswith("200")
        ftp.quit()
    finally:
        ftp.close()


def run_curl(bed, target, extra, path):
    c = clients.client("curl", bed, target)
    argv = [str(a) for a in c.base(None) + extra + ["-o", "/dev/null" if path else "-", c.url(path)]]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=clients.timeout(), env=c.env(), cwd=bed.clientdir)
    return r.returncode, r.stderr.decode("utf-8", "replace"), argv


def test_curl_ssl_reqd_fails_clearly(bed, server, proxy):
    rc, err, argv = run_curl(bed, proxy.target, ["--ssl-reqd"], bed.data["1"].name)
    what = "$ %s\n%s" % (" ".join(argv), err[-3000:])
    assert rc != 0, "curl --ssl-reqd succeeded through ftpssh:\n" + what
    # 64: CURLE_USE_SSL_FAILED, "Requested SSL level failed"
    assert rc == 64, "curl --ssl-reqd exited %d, expected 64 (SSL level failed):\n%s" % (rc, what)
    assert "< " + REFUSAL in err, "curl's output does not show ftpssh's 534:\n" + what
    sent = [l[2:].strip() for l in err.splitlines() if l.startswith("> ")]
    assert sent and all(s.upper().startswith(("AUTH ", "QUIT")) for s in sent), (
        "curl --ssl-reqd should send nothing but AUTH (and QUIT) after the refusal: %s" % sent)


def test_curl_ssl_opportunistic_goes_plain(bed, server, proxy, scratch):
    src = bed.data["1M"]
    local = clients.download_path(bed, "curl-ssl")
    scratch.append(local)
    rc, err, argv = run_curl(bed, proxy.target, ["--ssl", "-o", local], src.name)
    what = "$ %s\n%s" % (" ".join(argv), err[-3000:])
    assert rc == 0, "curl --ssl failed (exit %d):\n%s" % (rc, what)
    assert "< " + REFUSAL in err, "no 534 in curl --ssl's dialogue:\n" + what
    assert "> USER " + testbed.FTP_USER in err, what
    assert testbed.sha256_file(local) == src.sha256, "curl --ssl RETR: content differs"


def test_lftp_ssl_allow_falls_back(bed, server, proxy, scratch):
    c = clients.Lftp(bed, proxy.target, settings=["ftp:ssl-allow yes", "ftp:ssl-force no"])
    src = bed.data["1M"]
    local = clients.download_path(bed, "lftp-ssl")
    scratch.append(local)
    r = c.retr(src.name, local)
    assert any(s.upper().startswith("AUTH ") for s in r.sent), "lftp did not try AUTH: %s" % r.sent
    assert REFUSAL in r.received, "\n".join(r.received[-20:])
    assert testbed.sha256_file(local) == src.sha256


def test_lftp_ssl_force_fails_with_534(bed, server, proxy):
    c = clients.Lftp(bed, proxy.target, settings=["ftp:ssl-allow yes", "ftp:ssl-force yes"])
    with pytest.raises(clients.ClientError) as e:
        c.retr(bed.data["1"].name, clients.download_path(bed, "lftp-ssl-force"))
    assert REFUSAL in str(e.value), "lftp's failure does not show ftpssh's 534:\n%s" % str(e.value)[-3000:]
    assert "---> PASS" not in str(e.value), "lftp sent PASS in the clear after the refusal"


# --- FEAT from a server that offers TLS ----------------------------------------

@pytest.fixture(scope="module")
def stubbed(bed):
    stub = stubftp.StubFtp(pasv_host="127.0.0.1")
    stub.files["blob"] = b"plain inside SSH\n" * 1000
    run = None
    try:
        run = ftpssh.Ftpssh(bed, [stub])
        yield stub, run
    finally:
        if run is not None:
            run.stop(check=True)
        stub.close()


def test_feat_hides_auth(stubbed):
    stub, run = stubbed
    ftp = clients.open_ftplib(run.target, login=False)
    try:
        expect_534(ftp, "AUTH TLS")
        ftp.login("plain", "x")
        lines = ftp.sendcmd("FEAT").splitlines()
        assert lines[0].startswith("211-") and lines[-1].startswith("211 "), lines
        features = lines[1:-1]
        hidden = [l for l in stubftp.FEAT_LINES if AUTH_FEAT.match(l)]
        kept = [l for l in stubftp.FEAT_LINES if not AUTH_FEAT.match(l)]
        assert hidden and "AUTHX-NOT-TLS" in "".join(kept)
        assert not [l for l in features if AUTH_FEAT.match(l)], "FEAT still lists AUTH:\n%s" % lines
        assert features == kept, "FEAT lost or changed other features:\n%s\nexpected %s" % (lines, kept)
        h = hashlib.sha256()
        ftp.retrbinary("RETR blob", h.update)
        assert h.hexdigest() == hashlib.sha256(stub.files["blob"]).hexdigest()
        ftp.quit()
    finally:
        ftp.close()
    assert "AUTH" not in stub.commands(), "AUTH reached the server: %s" % stub.lines
    run.assert_alive()
