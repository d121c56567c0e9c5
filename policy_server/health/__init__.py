"""Honest health (`/healthz`) and calm answers when the database cannot work (typed 503)."""
