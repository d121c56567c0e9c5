"""Operations: `/metrics` (Prometheus text), JSON logs, scheduled backups and their check,
the seat install command (docs/operations.md)."""
from policy_server.operations import error_texts as _error_texts  # noqa: E402,F401  (registers the codes' texts)
