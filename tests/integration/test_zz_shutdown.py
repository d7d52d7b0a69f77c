"""Runs last (file order): the shared ftpssh processes, one per FTP
server, after everything above went through them, exit cleanly on
SIGTERM: in time, with an accepted status, and with no sanitizer report
(under ASan, LeakSanitizer runs at exit).
"""

import pytest


@pytest.mark.timeout(60)
def test_shared_proxies_exit_cleanly_on_sigterm(gateways):
    if not gateways.live:
        pytest.skip("no shared proxy was started by the selected tests")
    errors = gateways.close()
    assert not errors, "\n\n".join(errors)
