"""The texts of this domain's error codes (registered with policy_server.errors, so that
KalkanError.in_language says them in the reader's language)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ERROR_TEXTS = {
    'district.already': N_('This school is already enrolled at a district. Nothing was changed.'),
    'district.refused': N_(
        "The district server refused the enrolment. Check the code and the district's "
        'fingerprint, or ask the district office for a new code.'),
    'district.unknown_school': N_(
        "This school is not enrolled at the district. Enrol it first with the district's "
        'code.'),
    'district.bad_code': N_(
        'The district enrolment code is unknown, used or expired. Ask the district office'
        ' for a new one.'),
    'district.bad_signature': N_(
        "The weekly figures are not signed with this school's key. Enrol the school at "
        'the district again.'),
    'district.bad_key': N_("The school's public key must be a PEM public key."),
    'district.name': N_("The school needs a name. Write the school's name."),
    'district.period': N_('The period must be an ISO week, e.g. 2026-W49.'),
    'district.not_here': N_(
        "This is a school server, not a district server. Open the district's address "
        'instead.'),
}

register_error_texts(ERROR_TEXTS)
