"""What the console pages call (plain functions; docs/operations.md):

* `last_backup_state(settings)` — the newest scheduled backup and whether it passes the check
  (the fleet page: "last backup: … checked OK / damaged / none / overdue").
* `install_command(room, code, server_url, fingerprint)` — the one command per room shown on
  the enrolment page; `fingerprint` is `pubkey_pin(settings.cert_path)`.
"""

from policy_server.operations.backup import BackupState, last_backup_state
from policy_server.operations.seat import install_command, pubkey_pin

__all__ = ["BackupState", "install_command", "last_backup_state", "pubkey_pin"]
