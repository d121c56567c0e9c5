"""Kalkan workstation agent (see docs/agent.md)."""

__version__ = "0.1.0"
