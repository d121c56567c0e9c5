"""The audit log in the reader's language (004 §3.6): each action code and each known detail
key and value as a translatable text (fleet domain catalog), for the audit page and the CSV.

A code this table does not know yet is shown as it is (the code, never a Python repr); the
test `tests/server/test_audit_texts.py` walks every action the server writes and fails when
one has no title here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from policy_server.web.i18n import N_, format_datetime, translate

ACTIONS: dict[str, str] = {
    'agent.ca_issued': N_("Workstation certificate issued"),
    'agent.enroll': N_("Workstation joined the school"),
    'agent.rebind': N_("Workstation moved to another seat"),
    'agent.revoke': N_("Workstation access revoked"),
    'backup.created': N_("Backup made"),
    'class.create': N_("Class created"),
    'district.enrolled': N_("School joined the district"),
    'district.school_code': N_("District code for the school made"),
    'enrollment_code.create': N_("Enrolment code made"),
    'filtering.reject': N_("Site requests rejected"),
    'filtering.matrix': N_("Filter: category and group table changed"),
    'filtering.list': N_("Filter: site list changed"),
    'filtering.groups': N_("Filter: groups changed"),
    'filtering.schedule': N_("Filter: time bands changed"),
    'filtering.options': N_("Filter: options changed"),
    'filtering.starting': N_("Filter: starting policy applied"),
    'filtering.rollback': N_("Filter: earlier version restored"),
    'incident.acknowledged': N_("Incident acknowledged"),
    'incident.assigned': N_("Incident assigned"),
    'incident.resolved': N_("Incident resolved"),
    'isuo.address_set': N_("ISUO address of a seat set"),
    'isuo.consent_added': N_("ISUO consent recorded"),
    'isuo.consent_withdrawn': N_("ISUO consent withdrawn"),
    'isuo.holiday_added': N_("Holiday added"),
    'isuo.imported': N_("ISUO users imported"),
    'isuo.obligation_recorded': N_("Confidentiality obligation recorded"),
    'isuo.review_decision': N_("Access review decision"),
    'isuo.review_due_set': N_("Next access review date set"),
    'isuo.review_opened': N_("Access review opened"),
    'isuo.review_signed': N_("Access review signed"),
    'isuo.source_created': N_("ISUO import source created"),
    'isuo.source_mapping_changed': N_("ISUO import columns changed"),
    'isuo.user_blocked': N_("ISUO user blocked"),
    'isuo.user_changed': N_("ISUO user changed"),
    'isuo.user_created': N_("ISUO user added"),
    'isuo.user_left': N_("ISUO user left"),
    'isuo.working_time_set': N_("Working hours set"),
    'lesson.allow_site': N_("Site allowed for the lesson"),
    'lesson.ban': N_("Student's internet cut off in the lesson"),
    'lesson.disallow_site': N_("Site no longer allowed for the lesson"),
    'lesson.end': N_("Lesson ended"),
    'lesson.extend': N_("Lesson extended"),
    'lesson.eyes_on_me': N_("Screens paused: eyes on the teacher"),
    'lesson.forward_request': N_("Site request passed to the responsible person"),
    'lesson.lock': N_("Screens locked"),
    'lesson.preset': N_("Lesson defaults changed"),
    'lesson.scene.delete': N_("Lesson site set deleted"),
    'lesson.scene.save': N_("Lesson site set saved"),
    'lesson.start': N_("Lesson started"),
    'lesson.unban': N_("Student's internet restored in the lesson"),
    'lesson.unlock': N_("Screens unlocked"),
    'notice.address': N_("Notice addresses changed"),
    'notice.smtp': N_("Mail server settings changed"),
    'person.change_own_password': N_("Person changed their own password"),
    'person.create': N_("Account created"),
    'person.disable': N_("Account disabled"),
    'person.enable': N_("Account enabled"),
    'person.links': N_("Rooms and classes of an account changed"),
    'person.login': N_("Signed in"),
    'person.login_failed': N_("Failed sign-in"),
    'person.login_refused': N_("Sign-in refused: too many attempts"),
    'person.reset_password': N_("Password reset"),
    'person.room_linked': N_("Room linked to an account"),
    'person.set_password': N_("Password set"),
    'person.update': N_("Account changed"),
    'policy.amend': N_("Policy changed"),
    'retention.applied': N_("Old records removed (retention)"),
    'room.create': N_("Room created"),
    'room.layout': N_("Room layout changed"),
    'school.create': N_("School created"),
    'school.hosts': N_("School's host names changed"),
    'school.remove': N_("School removed from the service"),
    'seat.retire': N_("Seat retired"),
    'summary.made': N_("Summary for the district made"),
    'summary.mailed': N_("Summary sent by mail"),
    'timetable.classes_import': N_("Classes imported"),
    'timetable.import': N_("Timetable imported"),
    'timetable.internet_schedule': N_("Internet hours changed"),
    'timetable.period.add': N_("Lesson added to the timetable"),
    'timetable.period.delete': N_("Lesson removed from the timetable"),
    'timetable.seating': N_("Seating changed"),
    'timetable.student_account': N_("Student computer account added"),
    'tls.activated': N_("Server certificate: the next one made the served one"),
    'tls.next_made': N_("Server certificate: the next one made"),
    'tls.next_withdrawn': N_("Server certificate: the next one withdrawn"),
    'upgrade.start': N_("Agent upgrade started"),
    'upgrade.stop': N_("Agent upgrade stopped"),
    'usb.keep_blocked': N_("USB device kept blocked"),
}

DETAIL_KEYS: dict[str, str] = {
    # the server certificate's rotation (policy_server/certs)
    'certificate': N_("certificate (SHA-256)"),
    'new_certificate': N_("next certificate (SHA-256)"),
    'previous': N_("previous certificate (SHA-256)"),
    'names': N_("names"),
    # a school removed or re-hosted on a service of many schools (policy_server/tenancy)
    'hosts': N_("host names"),
    'database': N_("database"),
    'replaced': N_("replaced"),
    'forced': N_("forced"),
    'rooms': N_("rooms"),
    'class_teacher_of': N_("class teacher of"),
    'position': N_("position"),
    'isuo_role': N_("ISUO role"),
    'logins': N_("ISUO logins"),
    'order': N_("order (number, date)"),
    'login': N_("login column"),
    'time': N_("time column"),
    'action': N_("action column"),
    'ip': N_("IP address column"),
    'record_type': N_("record type column"),
    'accounts': N_("accounts"),
    'address': N_("address"),
    'after': N_("after"),
    'agent_id': N_("workstation"),
    'asked_to_block': N_("asked to block"),
    'assignee': N_("assigned to"),
    'assignee_id': N_("assignee number"),
    'account_records_scrubbed': N_("class-list audit records without the account"),
    'account_removed': N_("student's computer account removed (001 §2.15)"),
    'audit_records_scrubbed': N_("lesson audit records without the student"),
    'ban': N_("cut-off number"),
    'bands': N_("time bands"),
    'batch_size': N_("batch size"),
    'before': N_("before"),
    'blocked_on': N_("blocked on"),
    'by': N_("limit by"),
    'bytes': N_("size, bytes"),
    'class': N_("class"),
    'classes': N_("classes"),
    'clause': N_("clause"),
    'clauses': N_("clauses"),
    'cleared_at': N_("cleared at"),
    'columns': N_("columns"),
    'comment': N_("comment"),
    'content_hash': N_("content digest"),
    'count': N_("count"),
    'countdown_s': N_("countdown, s"),
    'cutoff': N_("older than"),
    'day': N_("day"),
    'days': N_("days"),
    'decision': N_("decision"),
    'due_on': N_("due on"),
    'end': N_("end"),
    'ends': N_("ends"),
    'ends_at': N_("ends at"),
    'event_id': N_("event"),
    'excluded': N_("excluded"),
    'expires_at': N_("expires"),
    'file': N_("file"),
    'file_number': N_("file number"),
    'full_name': N_("full name"),
    'given_on': N_("given on"),
    'host': N_("server"),
    'hostname': N_("computer name"),
    'incidents_affected': N_("incidents affected"),
    'instructed_by': N_("instructed by"),
    'incidents_depersonalised': N_("resolved incidents without the student's account"),
    'kept_for_open_incidents': N_("kept for open incidents"),
    'kind': N_("kind"),
    'language': N_("language"),
    'left_on': N_("left on"),
    'lessons_depersonalised': N_("lesson summaries without names"),
    'lifted': N_("lifted"),
    'minutes': N_("minutes"),
    'mode': N_("mode"),
    'name': N_("name"),
    'new': N_("new"),
    'next_due_on': N_("next review"),
    'note': N_("note"),
    'notices_depersonalised': N_("notices without the student"),
    'os_user': N_("computer account"),
    'partitions_dropped': N_("partitions dropped"),
    'period': N_("timetable lesson"),
    'personal_removed': N_("student's seat and account removed (001 §2.15)"),
    'periods': N_("lessons"),
    'policy_bundles_scrubbed': N_("old policy versions without the students"),
    'policy_ended_removed': N_("ended bans and lessons taken out of the policy in force"),
    'policy_comments_scrubbed': N_("policy comments without the student"),
    'port': N_("port"),
    'queue_copies_removed': N_("report copies removed from the queue"),
    'queue_items_scrubbed': N_("decided queue items without seats and comments"),
    'product': N_("device"),
    'reason': N_("reason"),
    'removed': N_("records removed"),
    'request': N_("request"),
    'retry_after': N_("retry after, s"),
    'role': N_("role"),
    'rollout': N_("rollout"),
    'room': N_("room"),
    'room_id': N_("room number"),
    'rows': N_("rows"),
    'scene': N_("site set"),
    'scheduled': N_("scheduled"),
    'score': N_("score"),
    'seat': N_("seat"),
    'seats': N_("seats"),
    'seconds': N_("seconds"),
    'sessions_ended': N_("sessions ended"),
    'sha256': N_("file digest"),
    'signed_on': N_("signed on"),
    'signer_name': N_("signed by"),
    'site': N_("site"),
    'sites': N_("sites"),
    'source': N_("source"),
    'start': N_("start"),
    'starts': N_("starts"),
    'state': N_("state"),
    'teacher': N_("teacher"),
    'term': N_("term"),
    'to': N_("to"),
    'total': N_("total"),
    'url': N_("address (URL)"),
    'urls': N_("addresses (URL)"),
    'user_id': N_("ISUO user"),
    'uses': N_("uses"),
    'via': N_("via"),
    'weekday': N_("weekday"),
    'weekdays': N_("weekdays"),
    'why': N_("why"),
    'withdrawn_on': N_("withdrawn on"),
}

DETAIL_VALUES: dict[tuple[str, str], str] = {
    ('via', 'page'): N_("the sign-in page"),
    ('via', 'api'): N_("the API"),
    ('why', 'wrong_password'): N_("wrong password"),
    ('why', 'unknown_account'): N_("no such account"),
    ('why', 'disabled'): N_("account disabled"),
    ('by', 'account'): N_("per account"),
    ('by', 'address'): N_("per address"),
    ('mode', 'open'): N_("open internet"),
    ('mode', 'allow_list'): N_("allowed sites only"),
    ('mode', 'no_internet'): N_("no internet"),
    ('decision', 'confirm'): N_("confirm"),
    ('decision', 'block'): N_("ask to block"),
    ('role', 'admin'): N_("responsible person"),
    ('role', 'teacher'): N_("teacher"),
    ('role', 'director'): N_("director"),
    ('role', 'district'): N_("district"),
    ('language', 'ky'): N_("Kyrgyz"),
    ('language', 'ru'): N_("Russian"),
    ('language', 'en'): N_("English"),
    ('note', 'condition_cleared'): N_("the condition cleared"),
}

YES, NO = N_("yes"), N_("no")
EMPTY = "—"


def action_title(language: str, action: str) -> str:
    """The action in the reader's language; an unknown code as it is."""
    text = ACTIONS.get(action)
    return translate(language, text) if text else str(action)


def key_text(language: str, key: str) -> str:
    text = DETAIL_KEYS.get(key)
    return translate(language, text) if text else str(key).replace("_", " ")


def value_text(language: str, key: str, value: Any) -> str:
    if value is None or value == [] or value == "" or value == {}:
        return EMPTY
    if isinstance(value, bool):
        return translate(language, YES if value else NO)
    if isinstance(value, list | tuple):
        return ", ".join(value_text(language, key, v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"from", "to"}:
            return f"{value_text(language, key, value['from'])} → {value_text(language, key, value['to'])}"
        return ", ".join(f"{key_text(language, k)}: {value_text(language, k, v)}" for k, v in value.items())
    if isinstance(value, str):
        known = DETAIL_VALUES.get((key, value))
        if known:
            return translate(language, known)
        if len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return value
            return format_datetime(moment, language) if moment.tzinfo else value
    return str(value)


def detail_rows(language: str, detail: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(key, value) pairs, each known key and value in the reader's language (for the page)."""
    return [(key_text(language, k), value_text(language, k, v)) for k, v in (detail or {}).items()]


def detail_text(language: str, detail: dict[str, Any] | None) -> str:
    """`key: value; …` in the reader's language (for the CSV)."""
    return "; ".join(f"{k}: {v}" for k, v in detail_rows(language, detail))
