"""The texts of this domain's error codes (registered with policy_server.errors, so that
KalkanError.in_language says them in the reader's language)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ERROR_TEXTS = {
    'isuo.import_rejected': N_(
        'The file was not imported: some rows are wrong. Each is listed with its line and'
        ' the fix; correct them and import the file again.'),
    'isuo.form_invalid': N_(
        'Some fields of the form are not filled in correctly. See the messages beside '
        'them.'),
    'isuo.no_review': N_('There is no such access review. Open the review from the list.'),
    'isuo.no_consent': N_('There is no such consent record. Open it from the consent register.'),
    'isuo.no_user': N_("This ISUO user is not in this review. Choose a person from the review's list."),
}

register_error_texts(ERROR_TEXTS)
