"""Lessons: one-click start, the hard end, the live seat map, actions, summaries (issue 13)."""
