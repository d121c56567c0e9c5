"""Idle locking (000 §6.4, §6.7, §6.8).

Two halves talk over a local Unix socket (`agent.idle.wire`):

* the per-session helper (`agent.idle.helper`, one per graphical login) reads the
  desktop's idle time and locks the screen;
* the root side (`agent.collectors.idle.IdleCollector`) tells each helper its
  timeout from the policy (shorter during and after an ISUO session) and turns the
  helpers' reports into `idle.locked` / `idle.lock_failed` events.

`agent.idle.core` holds the decisions, as pure functions, for both halves.
"""
