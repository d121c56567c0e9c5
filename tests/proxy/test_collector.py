"""ProxyCollector: a real mitmdump child, supervised and restarted when it dies."""

from __future__ import annotations

import os
import signal
import time

from agent.collectors.base import CollectorContext
from agent.collectors.proxy import ProxyCollector, ProxySettings, mitmdump_command
from policy_server.protocol import CollectorState
from tests.support.proxy_rig import free_port, wait_port


class ListSink:
    def __init__(self):
        self.events = []

    def emit(self, event_type, data, *, subject=None, clauses=None):
        self.events.append((event_type, data))
        return "x"


def test_command_line(tmp_path):
    cmd = mitmdump_command(ProxySettings(regular_port=1, transparent_port=2), state_dir=tmp_path,
                           confdir=tmp_path / "c", seat="s1", room="r1")
    assert cmd[cmd.index("--mode") + 1] == "regular@127.0.0.1:1" and "transparent@2" in cmd
    assert f"kalkan_state_dir={tmp_path}" in cmd and "kalkan_seat=s1" in cmd and "kalkan_room=r1" in cmd


def test_supervised_child_restarts(tmp_path):
    port = free_port()
    ctx = CollectorContext(sink=ListSink(), state_dir=tmp_path, seat="s1", platform="fake")
    collector = ProxyCollector(ctx, ProxySettings(regular_port=port, transparent_port=0, firewall=False,
                                                  proxy_user="no-such-user-kalkan"))
    collector.start()
    try:
        wait_port(port)
        first = collector.pid()
        assert first and collector.health().state == CollectorState.degraded  # no school CA yet
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while collector.pid() in (None, first):
            assert time.monotonic() < deadline, "mitmdump was not restarted"
            time.sleep(0.1)
        wait_port(port)
        assert collector.restarts == 1 and collector.last_exit == -signal.SIGKILL
    finally:
        collector.stop()
    assert collector.pid() is None and collector.health().state == CollectorState.stopped
