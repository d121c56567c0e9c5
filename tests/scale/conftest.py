"""Scale-out tests: the replica rig (tests/support/replicas.py) starts its own PostgreSQL."""
