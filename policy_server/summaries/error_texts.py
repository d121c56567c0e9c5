"""The texts of this domain's error codes (registered with policy_server.errors, so that
KalkanError.in_language says them in the reader's language)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ERROR_TEXTS = {
    'summaries.week': N_('That is not a week. Write it as YEAR-Www, e.g. 2026-W49.'),
    'summaries.running_week': N_('This week is not over yet. A weekly summary is made after its Sunday.'),
    'summaries.range': N_('The range ends before it starts. Give the first day, then the last.'),
}

register_error_texts(ERROR_TEXTS)
