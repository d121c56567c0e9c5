"""Checks that need more than one event: the database queries behind stateful rules.

The rules in `policy_server.rules` are pure functions of one event.  Some regulation checks
need history (the previous integrity baseline), an absence (no weekly scan, no lock after
ISUO) or several events together (a USB stick during an ISUO session).  Their pure parts
live beside the rules; this package reads what they need and hands their drafts to the
incident engine (`incidents.engine.process_drafts`):

* `stateful.py`  — run at ingest, in the upload's transaction (only for batches that carry
  the event types they need: `INGEST_CHECK_TYPES`);
* `periodic.py`  — run every few minutes / every hour by `scheduler.py` inside the server,
  or once by `kalkan-server run-checks` (cron, by hand).
"""
