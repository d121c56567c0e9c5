"""Operations: `/metrics` (Prometheus text), JSON logs, scheduled backups and their check,
the seat install command (docs/operations.md)."""
