"""Failures: a wrong FTP password reaches the client as the server's 530
and hurts no one else; SSH-side failures (unknown or changed host key,
refused user key, nothing listening) make ftpssh exit non-zero with a
message, without announcing a listener.
"""

import ftplib
import hashlib
import os

import pytest

from harness import clients, ftpssh, procs, testbed


def test_wrong_password_530_and_proxy_serves_on(bed, server, proxy):
    # A session already logged in before the bad login...
    before = clients.open_ftplib(proxy.target)
    bad = clients.open_ftplib(proxy.target, login=False)
    with pytest.raises(ftplib.error_perm) as e:
        bad.login(testbed.FTP_USER, "not-the-password")
    assert str(e.value).startswith("530"), "expected the server's 530, got %r\n%s" % (
        str(e.value), bad.transcript())
    bad.close()
    # ...keeps working afterwards,
    lines = []
    before.retrlines("LIST", lines.append)
    assert any("data-1M" in l for l in lines), "LIST after a failed login elsewhere:\n%s" % "\n".join(lines)
    before.quit()
    # and a new login works.
    proxy.assert_alive()
    after = clients.open_ftplib(proxy.target)
    h = hashlib.sha256()
    after.retrbinary("RETR data-1", h.update)
    assert h.hexdigest() == bed.data["1"].sha256
    after.quit()


def _expect_refusal(run, what):
    rc = run.wait_exit()
    text = run.stderr()
    assert rc is not None, "%s: ftpssh still running after %.0fs:\n%s" % (what, ftpssh.READY_TIMEOUT, text)
    assert rc != 0, "%s: ftpssh exited with status 0:\n%s" % (what, text)
    assert not run.announcements(), "%s: ftpssh announced a listener anyway:\n%s" % (what, text)
    assert text.strip(), "%s: exit status %d but nothing on stderr" % (what, rc)
    run.assert_clean()
    return text


@pytest.mark.ftpssh_only
def test_unknown_host_key_refused(bed):
    ssh = bed.sshd()
    empty = ssh.write_known_hosts("known_hosts.empty")
    run = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], known_hosts=empty, strict="yes", wait=False)
    text = _expect_refusal(run, "unknown host key")
    assert empty in text, "the message does not name the known_hosts file %s:\n%s" % (empty, text)
    # Refusing means refusing: nothing was added to the file.
    assert os.path.getsize(empty) == 0, "ftpssh wrote to %s with StrictHostKeyChecking=yes" % empty


@pytest.mark.ftpssh_only
def test_changed_host_key_refused(bed):
    ssh = bed.sshd()
    with open(ssh.other_key + ".pub") as f:
        wrong = " ".join(f.read().split()[:2])
    kh = ssh.write_known_hosts("known_hosts.wrong", wrong)
    for strict in ("yes", "accept-new"):
        run = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], known_hosts=kh, strict=strict, wait=False)
        _expect_refusal(run, "changed host key, StrictHostKeyChecking=%s" % strict)


@pytest.mark.ftpssh_only
def test_unauthorized_user_key_refused(bed):
    ssh = bed.sshd()
    run = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], identity=ssh.other_key, wait=False)
    _expect_refusal(run, "user key not in authorized_keys")


@pytest.mark.ftpssh_only
def test_nothing_listening_refused(bed):
    run = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], ssh_port=procs.free_port(), wait=False)
    _expect_refusal(run, "no sshd on the port")
