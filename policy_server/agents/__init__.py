"""Workstation agents: enrolment codes, enrolment, bearer tokens, last-seen and health."""
