"""The names of an upgrade's states and failure reasons, in the reader's language: one table
for the upgrades page and the `agent.upgrade` event's details (incidents/details.py)."""

from policy_server.web.i18n import N_

REASON_NAMES = {
    "fetch_failed": N_("the package could not be fetched from the server"),
    "install_failed": N_("the package manager failed"),
    "not_running": N_("the new version did not start"),
    "rollback_failed": N_("the upgrade failed and going back to the version before failed too"),
    "no_answer": N_("the seat did not answer in time"),
}
STATE_NAMES = {
    "waiting": N_("waiting"), "offered": N_("upgrading now"), "upgraded": N_("upgraded"),
    "rolled_back": N_("rolled back"), "failed": N_("failed"),
}
