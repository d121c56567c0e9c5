"""Lessons: one-click start, the hard end, the live seat map, actions, summaries (issue 13)."""
from policy_server.lessons import error_texts as _error_texts  # noqa: E402,F401  (registers the codes' texts)
