"""Agent upgrades from the console (issue 16): a rollout of a newer kalkan-agent package to the
seats, a few at a time, never in a room during a lesson; a seat that fails rolls back and says why."""

from policy_server.upgrades import error_texts as _error_texts  # noqa: E402,F401  (registers the codes' texts)
