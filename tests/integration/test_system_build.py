"""The packagers' build (make LIBSSH2=system: the system's libssh2, none
of ftpssh's patches) still compiles, works and says it is the slower one.

`make check` builds it into build/system/ftpssh (`make system-build`)
beside the default build, because code that uses a patch's macro without
its #ifdef breaks only that variant (it happened: ade5e6e). On Debian 12
the system's libssh2 is 1.10.
"""

import os
import re

import pytest

from harness import clients, ftpssh

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_BIN = os.path.join(os.path.dirname(os.path.dirname(HERE)), "build", "system", "ftpssh")
NOTE = re.compile(r"libssh2 [0-9.]+ from the system \(system build\): .* slower")


def system_binary():
    if not os.access(SYSTEM_BIN, os.X_OK):
        pytest.skip("%s not built (make system-build; make check builds it)" % SYSTEM_BIN)
    return SYSTEM_BIN


@pytest.mark.timeout(120)
def test_system_build_transfers_and_says_it_is_slower(bed):
    srv = bed.ftp_server("vsftpd")
    proxy = ftpssh.Ftpssh(bed, [srv], extra=["-vv"], binary_path=system_binary())
    try:
        clients.assert_retr_intact(proxy.target, bed.data["1M"])
        proxy.assert_alive()
        assert NOTE.search(proxy.stderr()), proxy.stderr()[-3000:]
    finally:
        proxy.stop()


@pytest.mark.timeout(120)
def test_default_build_has_no_slower_note(bed):
    if ftpssh.libssh2_version()[1] != "bundled":
        pytest.skip("the binary under test is itself a system build")
    proxy = ftpssh.Ftpssh(bed, [bed.ftp_server("vsftpd")], extra=["-vv"])
    try:
        clients.assert_retr_intact(proxy.target, bed.data["1M"])
        text = proxy.stderr()
        # the -vv lines are there, the note is not
        assert "ftpssh:" in text and not NOTE.search(text), text[-3000:]
    finally:
        proxy.stop()
