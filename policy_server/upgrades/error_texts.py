"""The texts of this domain's error codes (registered with policy_server.errors)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ERROR_TEXTS = {
    "upgrade.unknown_version": N_("This server has no agent package of that version. "
                                  "Choose one from the list."),
    "upgrade.bad_batch": N_("Seats at a time is a whole number from 1 to 50."),
    "upgrade.not_found": N_("There is no such upgrade."),
    "upgrade.not_offered": N_("This seat was not offered that upgrade."),
    "upgrade.bad_state": N_("The upgrade's result must be upgraded, rolled back or failed."),
}

register_error_texts(ERROR_TEXTS)
