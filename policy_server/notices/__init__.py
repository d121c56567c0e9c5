"""Notices to people: a badge and a list in the console, and e-mail (`mail.py`)."""
