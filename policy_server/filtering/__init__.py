"""Filtering run from the console: category lists as a server artifact, the policy editor,
and the report / unblock queue (issue 12; docs/filtering-console.md)."""
