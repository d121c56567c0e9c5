"""The texts of this domain's error codes (registered with policy_server.errors, so that
KalkanError.in_language says them in the reader's language)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ERROR_TEXTS = {
    'lesson.none': N_(
        "No lesson runs in this workstation's room. Lesson activity is sent only during a"
        ' lesson of this room.'),
}

register_error_texts(ERROR_TEXTS)
