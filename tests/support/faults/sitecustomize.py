"""Fault injection for a real `kalkan-server` process (put this folder on its PYTHONPATH).

`KALKAN_FAULT_POISON_URL=<url>`: the server behaves like one without per-event isolation
(the whole batch fails with a 500) whenever a batch holds a `web.report` for that URL, the
way a server bug not found yet would.  Used by tests/agent/test_uplink_server.py to show the
agent finds and moves aside such an event on its own.
"""

import os

_POISON = os.environ.get("KALKAN_FAULT_POISON_URL")

if _POISON:
    from policy_server.events import ingest

    _real_rules = ingest.process_events

    def _failing_rules(db, inputs):
        if any(i.data.get("url") == _POISON for i in inputs):
            raise RuntimeError("injected fault: this event fails the server")
        return _real_rules(db, inputs)

    def _whole_batch_only(sessions, *, agent_id, checked):
        return ingest._store_committed(sessions, agent_id, checked)  # no isolation: the batch fails

    ingest.process_events = _failing_rules
    ingest.store_isolating = _whole_batch_only
