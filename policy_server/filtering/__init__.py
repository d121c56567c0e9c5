"""Filtering run from the console: category lists as a server artifact, the policy editor,
and the report / unblock queue (issue 12; docs/filtering-console.md)."""

from policy_server.filtering import error_texts as _error_texts  # noqa: E402,F401  (registers the codes' texts)
