"""Event ingest: validate → store once → side effects (heartbeat, ISUO log) → incident rules."""
