"""Errors of the timetable and lessons, said in the reader's language.

The shared `policy_server.errors.ERROR_TEXTS` stays untouched (merges): these errors carry
their own texts (English message ids translated by this package's catalogs)."""

from __future__ import annotations

from policy_server import errors
from policy_server.web.i18n import N_

TEXTS: dict[str, str] = {
    "lesson.not_found": N_("No such lesson in your rooms. Open the lesson from your home page."),
    "lesson.room_not_yours": N_(
        "Room %(room)s is not one of your rooms. Ask the responsible person to add it to your rooms."),
    "lesson.room_busy": N_(
        "A lesson is already running in room %(room)s until %(until)s. End it first, or wait."),
    "lesson.bad_mode": N_("Choose one of: open internet, only the allowed sites, no internet."),
    "lesson.bad_end": N_(
        "The end time must be after now and at most %(hours)s hours away; write it as HH:MM."),
    "lesson.ended": N_("This lesson has ended; nothing was changed. Start a new lesson."),
    "lesson.extend_cap": N_(
        "The lesson can be extended by at most %(minutes)s minutes in all; it ends at %(until)s."),
    "lesson.not_yours": N_("Only the lesson's teacher or the responsible person can do this."),
    "lesson.no_period": N_("You have no period in the timetable now. Start a lesson by the form below."),
    "lesson.seat_unknown": N_("Seat %(seat)s is not in room %(room)s. Choose a seat on the map."),
    "lesson.ban_no_lesson": N_(
        "A teacher can ban only during their own lesson (000 §7.3); start the lesson first."),
    "lesson.ban_target": N_("Choose a seat or a student (OS account) to ban."),
    "lesson.bad_site": N_(
        "%(site)s is not a site address. Write a domain such as example.org or an address with https://."),
    "lesson.bad_minutes": N_("Write a whole number of minutes between %(low)s and %(high)s."),
    "lesson.scene_name": N_("Give the scene a name of 1 to 64 characters."),
    "lesson.scene_not_found": N_("No such scene among yours."),
    "lesson.message_long": N_("The message is too long: at most 200 characters."),
    "lesson.request_not_found": N_(
        "No such unblock request waiting in this lesson: it was answered or sent on already."
        " Reload the page."),
    "timetable.classes_csv_empty": N_(
        "The file has no rows. The columns are: class, and optionally a student's OS account."),
    "timetable.classes_csv_columns": N_(
        "This row has %(count)s columns; write two at most: the class, then a student's OS account."),
    "timetable.account_twice": N_(
        "Account %(value)s is already in class %(cls)s on line %(line)s. Keep one class per account."),
    "timetable.bad_account": N_(
        "%(value)s is not an OS account name. Write the login as on the workstation, without spaces "
        "(at most 64 characters)."),
    "timetable.bad_weekday": N_(
        "The weekday must be 1 (Monday) to 7 (Sunday), or a day name; got %(value)s."),
    "timetable.bad_time": N_("%(value)s is not a time. Write it as HH:MM, e.g. 08:30."),
    "timetable.end_before_start": N_("The period ends (%(ends)s) before it starts (%(starts)s). Swap them."),
    "timetable.unknown_room": N_("No room named %(room)s. Rooms: %(rooms)s."),
    "timetable.unknown_teacher": N_(
        "No teacher with the user name %(teacher)s. Create the account first, or fix the name."),
    "timetable.bad_class": N_("%(value)s is not a class name. Write e.g. 7-Б (at most 32 characters)."),
    "timetable.overlap": N_(
        "Room %(room)s already has a period on that day from %(starts)s to %(ends)s. "
        "Change the time or room."),
    "timetable.csv_empty": N_(
        "The file has no rows. The columns are: weekday, start, end, room, class, teacher."),
    "timetable.csv_errors": N_("Nothing was imported: %(count)s rows need fixing (listed below)."),
    "timetable.period_not_found": N_("No such period in your rooms."),
    "timetable.bad_year": N_("The school year must look like 2026-2027 (two following years)."),
    "timetable.bad_place": N_(
        "Seat %(seat)s: write its place as row,column (row 1-10, column 1-6), e.g. 2,3; got %(value)s."),
    "timetable.place_taken": N_(
        "Seats %(other)s and %(seat)s are both at %(value)s. Give each seat its own place."),
    "timetable.bad_student": N_("Write the student's name (1 to 120 characters)."),
    "notice.bad_email": N_("This is not an e-mail address. Write it as name@example.kg, or leave it empty."),
    "notice.bad_smtp": N_(
        "Check the SMTP settings: the port is 1-65535 (usually 587) and the sender is an e-mail address."),
}


class _Texts:
    def in_language(self, language: str) -> str:  # type: ignore[override]
        template = TEXTS.get(self.code)  # type: ignore[attr-defined]
        if template is None or language == "en":
            return self.message  # type: ignore[attr-defined]
        from policy_server.web.i18n import translate

        try:
            return translate(language, template, **self.params)  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError):
            return self.message  # type: ignore[attr-defined]


class Invalid(_Texts, errors.InvalidInput):
    pass


class Missing(_Texts, errors.NotFound):
    pass


class Refused(_Texts, errors.Forbidden):
    pass


class Clash(_Texts, errors.Conflict):
    pass


def fail(cls: type[errors.KalkanError], code: str, **params: object) -> errors.KalkanError:
    """An error of `cls` whose English message is the text of `code` filled with `params`."""
    text = TEXTS[code]
    try:
        message = text % params if params else text
    except (KeyError, TypeError, ValueError):
        message = text
    return cls(message, code=code, params=params)
