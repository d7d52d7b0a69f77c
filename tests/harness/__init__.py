"""ftpssh integration-test harness: a loopback sandbox (sshd + FTP
servers), the ftpssh process under test, and the FTP clients."""
