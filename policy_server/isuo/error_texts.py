"""The ISUO package's error codes and their texts (message ids translated by its catalog)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ISUO_ERROR_TEXTS = {
    "isuo.form_invalid": N_("Some fields need correcting: %(fields)s."),
    "isuo.import_rejected": N_(
        "The file was not imported: %(n)d row(s) need fixing; the first at line %(line)d."
    ),
    "isuo.no_user": N_("No such person in the ISUO register."),
    "isuo.no_consent": N_("No such consent in the register."),
    "isuo.no_review": N_("No such review."),
    "isuo.bad_date": N_("%(value)s is not a date; give it as 2026-11-01."),
    "isuo.bad_period": N_("The end must be after the start (the end day is not included)."),
}

register_error_texts(ISUO_ERROR_TEXTS)
ERROR_TEXTS = ISUO_ERROR_TEXTS  # the name other domains use
