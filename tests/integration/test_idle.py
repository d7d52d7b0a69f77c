"""An idle SSH connection stays up (issue 12 #5).

With no FTP session, ftpssh has no channel open, and libssh2 reads the
transport only inside channel calls: sshd's keepalive@openssh.com requests
went unanswered and sshd (ClientAliveInterval 2, ClientAliveCountMax 2)
dropped the connection after ~6 s, so clients got 421 while ftpssh
reconnected. The bundled libssh2's patch 0002 (session_process_input) lets
ftpssh handle input with no channel open.
"""

import time

import pytest

from harness import clients, ftpssh, procs

pytestmark = pytest.mark.ftpssh_only

IDLE_SECONDS = 16


@pytest.mark.timeout(120)
def test_idle_connection_answers_server_keepalives(bed):
    if ftpssh.libssh2_version()[1] != "bundled":
        pytest.skip("needs the bundled libssh2 (patch 0002); this build links the system's")
    ssh = bed.extra_sshd("ssh-idle", extra_config=["ClientAliveInterval 2",
                                                     "ClientAliveCountMax 2"])
    proxy = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], ssh=ssh)
    try:
        t_end = time.monotonic() + IDLE_SECONDS * procs.time_scale()
        while time.monotonic() < t_end:
            assert proxy.alive()
            time.sleep(0.5)
        text = proxy.stderr()
        assert "lost" not in text and "reconnecting" not in text, text
        assert "Timeout, client not responding" not in ssh.log_text()
        assert proxy.ssh_connections() == 1
        # and the connection still carries FTP
        clients.assert_retr_intact(proxy.target, bed.data["1M"])
    finally:
        proxy.stop()
