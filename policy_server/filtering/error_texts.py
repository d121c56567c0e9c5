"""The texts of this domain's error codes (registered with policy_server.errors).

`filtering.bad_input` (editor.ListInputError) names every bad line; its `in_language` says
each problem in the reader's language (editor.PROBLEMS), this text is the fallback."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ERROR_TEXTS = {
    "filtering.bad_input": N_("The input has problems; nothing was saved. Correct the lines named and try "
                              "again."),
}

register_error_texts(ERROR_TEXTS)
