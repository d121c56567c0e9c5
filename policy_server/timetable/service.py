"""The timetable's service: weekly periods (page and CSV), the internet-use schedule per
school year (001 §2.1–2.4), the room layout and the seating plan.

Scope (policy_server/scope.py): the responsible person edits everything; a teacher reads the
periods of their own rooms.  A period ties its teacher to its room and class
(`person_rooms`, `person_classes`): whoever teaches in a room may run lessons there."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import Person, PersonClass, PersonRoom, Role, Room, SchoolClass, Workstation
from policy_server.scope import Viewer
from policy_server.timetable.errors import Invalid, Missing, fail
from policy_server.timetable.models import InternetBand, Period, RoomSeat, SeatingEntry, StudentAccount

SCHOOL_TZ = ZoneInfo("Asia/Bishkek")
WEEKDAYS = {  # 0 = Monday; names in the three languages and short forms
    **{str(i + 1): i for i in range(7)},
    **{n: i for i, names in enumerate([
        ("mon", "monday", "дүйшөмбү", "понедельник", "пн", "дш"),
        ("tue", "tuesday", "шейшемби", "вторник", "вт", "шш"),
        ("wed", "wednesday", "шаршемби", "среда", "ср", "шр"),
        ("thu", "thursday", "бейшемби", "четверг", "чт", "бш"),
        ("fri", "friday", "жума", "пятница", "пт", "жм"),
        ("sat", "saturday", "ишемби", "суббота", "сб", "иш"),
        ("sun", "sunday", "жекшемби", "воскресенье", "вс", "жк"),
    ]) for n in names},
}
_TIME = re.compile(r"^(\d{1,2})[:.](\d{2})$")
_CLASS = re.compile(r"^[\w .-]{1,32}$")
_YEAR = re.compile(r"^(\d{4})-(\d{4})$")
CSV_COLUMNS = ("weekday", "start", "end", "room", "class", "teacher")


def local_now(now: datetime) -> datetime:
    return now.astimezone(SCHOOL_TZ)


def parse_weekday(value: str | int) -> int:
    key = str(value).strip().lower()
    if key not in WEEKDAYS:
        raise fail(Invalid, "timetable.bad_weekday", value=str(value))
    return WEEKDAYS[key]


def parse_hhmm(value: str) -> str:
    match = _TIME.match(str(value).strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise fail(Invalid, "timetable.bad_time", value=str(value))
    return f"{int(match[1]):02d}:{match[2]}"


def at_local(day: date, hhmm: str) -> datetime:
    """The aware UTC-comparable datetime of `hhmm` school time on `day`."""
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, time(h, m), SCHOOL_TZ)


# ----------------------------------------------------------------------------- classes


def ensure_class(db: Session, name: str) -> SchoolClass:
    name = name.strip()
    if not _CLASS.match(name):
        raise fail(Invalid, "timetable.bad_class", value=name)
    found = db.scalar(select(SchoolClass).where(SchoolClass.name == name))
    if found is None:
        found = SchoolClass(name=name)
        db.add(found)
        db.flush()
    return found


def list_classes(db: Session, viewer: Viewer) -> list[SchoolClass]:
    query = select(SchoolClass).order_by(SchoolClass.name)
    if viewer.class_ids is not None:
        query = query.where(SchoolClass.id.in_(viewer.class_ids or {-1}))
    return list(db.scalars(query))


# ----------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class PeriodRow:
    id: int
    weekday: int
    starts: str
    ends: str
    room_id: int
    room: str
    class_id: int | None
    school_class: str
    teacher_id: int
    teacher: str
    teacher_name: str


def _tie(db: Session, teacher_id: int, room_id: int, class_id: int | None) -> None:
    if db.get(PersonRoom, (teacher_id, room_id)) is None:
        db.add(PersonRoom(person_id=teacher_id, room_id=room_id))
    if class_id is not None and db.get(PersonClass, (teacher_id, class_id)) is None:
        db.add(PersonClass(person_id=teacher_id, class_id=class_id, class_teacher=False))


def _overlaps(db: Session, weekday: int, starts: str, ends: str, room_id: int,
              pending: list[tuple[int, str, str, int]] = ()) -> Period | tuple | None:
    for p in db.scalars(select(Period).where(Period.room_id == room_id, Period.weekday == weekday)):
        if p.starts < ends and starts < p.ends:
            return p
    for other in pending:
        if other[0] == weekday and other[3] == room_id and other[1] < ends and starts < other[2]:
            return other
    return None


def _resolve(db: Session, *, weekday, starts, ends, room: str, school_class: str, teacher: str):
    day = parse_weekday(weekday)
    s, e = parse_hhmm(starts), parse_hhmm(ends)
    if e <= s:
        raise fail(Invalid, "timetable.end_before_start", starts=s, ends=e)
    room_row = db.scalar(select(Room).where(Room.name == room.strip()))
    if room_row is None:
        rooms = ", ".join(db.scalars(select(Room.name).order_by(Room.name))) or "—"
        raise fail(Invalid, "timetable.unknown_room", room=room.strip(), rooms=rooms)
    person = db.scalar(select(Person).where(Person.username == teacher.strip().lower(),
                                            Person.role.in_((Role.teacher, Role.admin)),
                                            Person.disabled.is_(False)))
    if person is None:
        raise fail(Invalid, "timetable.unknown_teacher", teacher=teacher.strip())
    class_name = school_class.strip()
    if class_name and not _CLASS.match(class_name):
        raise fail(Invalid, "timetable.bad_class", value=class_name)
    return day, s, e, room_row, class_name, person


def add_period(db: Session, viewer: Viewer, *, weekday, starts: str, ends: str, room: str,
               school_class: str, teacher: str) -> Period:
    _admin_only(viewer)
    day, s, e, room_row, class_name, person = _resolve(
        db, weekday=weekday, starts=starts, ends=ends, room=room, school_class=school_class, teacher=teacher)
    clash = _overlaps(db, day, s, e, room_row.id)
    if clash is not None:
        raise fail(Invalid, "timetable.overlap", room=room_row.name, starts=clash.starts, ends=clash.ends)
    cls = ensure_class(db, class_name) if class_name else None
    period = Period(weekday=day, starts=s, ends=e, room_id=room_row.id, class_id=cls.id if cls else None,
                    teacher_id=person.id)
    db.add(period)
    _tie(db, person.id, room_row.id, period.class_id)
    db.flush()
    audit(db, actor=viewer.name, action="timetable.period.add", target=f"period:{period.id}",
          detail={"weekday": day, "starts": s, "ends": e, "room": room_row.name, "class": class_name,
                  "teacher": person.username})
    return period


def delete_period(db: Session, viewer: Viewer, *, period_id: int) -> None:
    _admin_only(viewer)
    period = db.get(Period, period_id)
    if period is None:
        raise fail(Missing, "timetable.period_not_found")
    from policy_server.lessons.models import Lesson

    for lesson in db.scalars(select(Lesson).where(Lesson.period_id == period_id)):
        lesson.period_id = None  # the lesson's record stays (its summary), the row goes
    db.delete(period)
    audit(db, actor=viewer.name, action="timetable.period.delete", target=f"period:{period_id}")


@dataclass
class CsvProblem:
    line: int
    message_code: str
    params: dict


def import_csv(db: Session, viewer: Viewer, *, text: str) -> tuple[int, list[CsvProblem]]:
    """Import periods from CSV (`weekday,start,end,room,class,teacher`; a header row is
    optional; `,` or `;`).  All or nothing: any bad row → nothing stored and every bad row
    named with its line and the fix."""
    _admin_only(viewer)
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise fail(Invalid, "timetable.csv_empty")
    dialect = ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=dialect))
    problems: list[CsvProblem] = []
    pending: list[tuple[int, str, str, int, str, int]] = []
    for number, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if number == 1 and cells and cells[0].lower() in ("weekday", "день", "күн", "day"):
            continue
        if len(cells) < 6:
            cells += [""] * (6 - len(cells))
        try:
            day, s, e, room_row, class_name, person = _resolve(
                db, weekday=cells[0], starts=cells[1], ends=cells[2], room=cells[3],
                school_class=cells[4], teacher=cells[5])
            clash = _overlaps(db, day, s, e, room_row.id, [p[:4] for p in pending])
            if clash is not None:
                cs, ce = (clash.starts, clash.ends) if isinstance(clash, Period) else (clash[1], clash[2])
                raise fail(Invalid, "timetable.overlap", room=room_row.name, starts=cs, ends=ce)
        except Invalid as exc:
            problems.append(CsvProblem(number, exc.code, exc.params))
            continue
        pending.append((day, s, e, room_row.id, class_name, person.id))
    if not pending and not problems:
        raise fail(Invalid, "timetable.csv_empty")
    if problems:
        return 0, problems
    for day, s, e, room_id, class_name, teacher_id in pending:
        cls = ensure_class(db, class_name) if class_name else None
        db.add(Period(weekday=day, starts=s, ends=e, room_id=room_id, class_id=cls.id if cls else None,
                      teacher_id=teacher_id))
        _tie(db, teacher_id, room_id, cls.id if cls else None)
        db.flush()
    audit(db, actor=viewer.name, action="timetable.import", detail={"periods": len(pending)})
    return len(pending), []


def _rows(db: Session, query) -> list[PeriodRow]:
    query = (query.join(Room, Room.id == Period.room_id).join(Person, Person.id == Period.teacher_id)
             .outerjoin(SchoolClass, SchoolClass.id == Period.class_id)
             .add_columns(Room.name, SchoolClass.name, Person.username, Person.full_name)
             .order_by(Period.weekday, Period.starts, Room.name))
    return [PeriodRow(p.id, p.weekday, p.starts, p.ends, p.room_id, room, p.class_id, cls or "",
                      p.teacher_id, username, full_name or username)
            for p, room, cls, username, full_name in db.execute(query)]


def list_periods(db: Session, viewer: Viewer) -> list[PeriodRow]:
    query = select(Period)
    if viewer.room_ids is not None:
        query = query.where(Period.room_id.in_(viewer.room_ids or {-1}))
    return _rows(db, query)


def teacher_periods_on(db: Session, person: Person, day: date) -> list[PeriodRow]:
    return _rows(db, select(Period).where(Period.teacher_id == person.id, Period.weekday == day.weekday()))


def now_and_next(db: Session, person: Person, now: datetime) -> tuple[PeriodRow | None, PeriodRow | None]:
    """The teacher's period running now and their next one today (school-local time)."""
    local = local_now(now)
    hhmm = local.strftime("%H:%M")
    current = upcoming = None
    for row in teacher_periods_on(db, person, local.date()):
        if row.starts <= hhmm < row.ends and current is None:
            current = row
        elif row.starts > hhmm and upcoming is None:
            upcoming = row
    return current, upcoming


def period_bounds(row: PeriodRow | Period, now: datetime) -> tuple[datetime, datetime]:
    day = local_now(now).date()
    return at_local(day, row.starts), at_local(day, row.ends)


def period_at(db: Session, room_id: int, at: datetime) -> Period | None:
    local = local_now(at)
    hhmm = local.strftime("%H:%M")
    return db.scalar(select(Period).where(Period.room_id == room_id, Period.weekday == local.weekday(),
                                          Period.starts <= hhmm, Period.ends > hhmm).limit(1))


# ----------------------------------------------------------------------------- internet-use schedule


def school_year_of(day: date) -> str:
    start = day.year if day.month >= 9 else day.year - 1
    return f"{start}-{start + 1}"


def set_internet_schedule(db: Session, viewer: Viewer, *, school_year: str,
                          bands: list[tuple[int | str, str, str]]) -> list[InternetBand]:
    """Replace the year's approved bands (001 §2.1–2.4); the current year's go to the agents as
    the student groups' weekly schedule."""
    _admin_only(viewer)
    match = _YEAR.match(school_year.strip())
    if not match or int(match[2]) != int(match[1]) + 1:
        raise fail(Invalid, "timetable.bad_year")
    parsed = []
    for weekday, starts, ends in bands:
        day, s, e = parse_weekday(weekday), parse_hhmm(starts), parse_hhmm(ends)
        if e <= s:
            raise fail(Invalid, "timetable.end_before_start", starts=s, ends=e)
        parsed.append((day, s, e))
    db.execute(delete(InternetBand).where(InternetBand.school_year == school_year))
    rows = [InternetBand(school_year=school_year, weekday=d, starts=s, ends=e,
                         approved_by=viewer.name) for d, s, e in parsed]
    db.add_all(rows)
    db.flush()
    audit(db, actor=viewer.name, action="timetable.internet_schedule",
          target=f"year:{school_year}", detail={"bands": [list(p) for p in parsed]})
    if school_year == school_year_of(local_now(viewer_now()).date()):
        _push_schedule(db, viewer.name, parsed)
    return rows


def viewer_now() -> datetime:
    from policy_server.db.models import utcnow

    return utcnow()


def _push_schedule(db: Session, actor: str, parsed: list[tuple[int, str, str]]) -> None:
    """Student groups browse only inside the approved bands (filters: `schedule.outside_hours`)."""
    from policy_server import protocol
    from policy_server.policies.service import amend_policy

    by_time: dict[tuple[str, str], list[int]] = {}
    for day, s, e in parsed:
        by_time.setdefault((s, e), []).append(day)
    bands = [protocol.TimeBand(days=sorted(days), start=s, end=e) for (s, e), days in sorted(by_time.items())]

    def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
        for group in bundle.groups:
            if group.kind == protocol.GroupKind.student:
                bundle.filtering.schedules[group.name] = bands
        return bundle

    amend_policy(db, actor=actor, comment="internet-use schedule (001 §2.1–2.4)", change=change)


def internet_schedule(db: Session, school_year: str) -> list[InternetBand]:
    return list(db.scalars(select(InternetBand).where(InternetBand.school_year == school_year)
                           .order_by(InternetBand.weekday, InternetBand.starts)))


# ----------------------------------------------------------------------------- room layout, seating


@dataclass(frozen=True)
class SeatPlace:
    seat: str
    row: int
    col: int
    agent_id: str | None
    hostname: str


def room_layout(db: Session, room_id: int, *, columns: int = 6) -> list[SeatPlace]:
    """The room's seats where they stand: the saved layout, else the enrolled seats in rows of
    `columns` (sorted by seat name)."""
    placed = {r.seat: r for r in db.scalars(select(RoomSeat).where(RoomSeat.room_id == room_id))}
    stations = {w.seat: w for w in db.scalars(select(Workstation).where(Workstation.room_id == room_id,
                                                                        Workstation.seat.is_not(None)))}
    names = sorted(set(placed) | set(stations), key=_natural)
    out: list[SeatPlace] = []
    unplaced = 0
    for name in names:
        ws = stations.get(name)
        if name in placed:
            row, col = placed[name].row, placed[name].col
        else:
            row, col = divmod(unplaced, columns)
            row += 100  # after every placed seat
            unplaced += 1
        out.append(SeatPlace(name, row, col, ws.id if ws else None, ws.hostname if ws else ""))
    out.sort(key=lambda p: (p.row, p.col))
    return out


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def set_seat_place(db: Session, viewer: Viewer, *, room_id: int, seat: str, row: int, col: int) -> None:
    _admin_only(viewer)
    found = db.scalar(select(RoomSeat).where(RoomSeat.room_id == room_id, RoomSeat.seat == seat))
    if found is None:
        db.add(RoomSeat(room_id=room_id, seat=seat, row=row, col=col))
    else:
        found.row, found.col = row, col


def set_seating(db: Session, viewer: Viewer, *, class_id: int, room_id: int, seat: str, student: str) -> None:
    """Who of the class sits at the seat (empty `student`: nobody).  The responsible person or a
    teacher of both the class and the room."""
    if not viewer.may_see_class(class_id) or not viewer.may_see_room(room_id):
        raise fail(Missing, "timetable.period_not_found")
    student = student.strip()
    if len(student) > 120:
        raise fail(Invalid, "timetable.bad_student")
    found = db.scalar(select(SeatingEntry).where(SeatingEntry.class_id == class_id,
                                                 SeatingEntry.room_id == room_id, SeatingEntry.seat == seat))
    if not student:
        if found is not None:
            db.delete(found)
    elif found is None:
        db.add(SeatingEntry(class_id=class_id, room_id=room_id, seat=seat, student=student))
    else:
        found.student = student
    audit(db, actor=viewer.name, action="timetable.seating", target=f"class:{class_id}",
          detail={"room_id": room_id, "seat": seat})


def seating_of(db: Session, class_id: int | None, room_id: int) -> dict[str, str]:
    if class_id is None:
        return {}
    return {e.seat: e.student for e in db.scalars(
        select(SeatingEntry).where(SeatingEntry.class_id == class_id, SeatingEntry.room_id == room_id))}


def student_at(db: Session, *, room_id: int, seat: str, at: datetime) -> str | None:
    """The student the seating plan puts at `seat` during the period running at `at`."""
    period = period_at(db, room_id, at)
    if period is None or period.class_id is None:
        return None
    return seating_of(db, period.class_id, room_id).get(seat)


# ----------------------------------------------------------------------------- a student's class


def set_student_account(db: Session, viewer: Viewer, *, os_user: str, school_class: str) -> StudentAccount:
    """Map a student's own OS account to their class (or move it to another class)."""
    _admin_only(viewer)
    name = (os_user or "").strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise fail(Invalid, "timetable.bad_account", value=os_user or "")
    cls = ensure_class(db, school_class)
    found = db.get(StudentAccount, name)
    if found is None:
        found = StudentAccount(os_user=name, class_id=cls.id)
        db.add(found)
    else:
        found.class_id = cls.id
    audit(db, actor=viewer.name, action="timetable.student_account", target=f"class:{cls.id}",
          detail={"os_user": name})
    db.flush()
    return found


def import_classes_csv(db: Session, viewer: Viewer, *, text: str) -> tuple[tuple[int, int], list[CsvProblem]]:
    """Import the class list from CSV: `class[,student's OS account]` per row (a header row is
    optional; `,` or `;`).  A row with a class only adds the class; with an account it also maps
    that account to the class (moving it from another class).  All or nothing: any bad row →
    nothing stored and every bad row named with its line and the fix.  ((classes, accounts), [])."""
    _admin_only(viewer)
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise fail(Invalid, "timetable.classes_csv_empty")
    first = text.split("\n", 1)[0]
    rows = list(csv.reader(io.StringIO(text), delimiter=";" if first.count(";") > first.count(",") else ","))
    problems: list[CsvProblem] = []
    classes: dict[str, int] = {}  # class name → first line
    accounts: dict[str, tuple[str, int]] = {}  # account → (class, line)
    for number, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row] + ["", ""]
        if not any(cells):
            continue
        if number == 1 and cells[0].lower() in ("class", "класс", "класс.", "класс аты", "classe"):
            continue
        name, account = cells[0], cells[1]
        if len(row) > 2 and any(c.strip() for c in row[2:]):
            problems.append(CsvProblem(number, "timetable.classes_csv_columns", {"count": len(row)}))
            continue
        if not _CLASS.match(name):
            problems.append(CsvProblem(number, "timetable.bad_class", {"value": name}))
            continue
        if account and (len(account) > 64 or any(c.isspace() for c in account)):
            problems.append(CsvProblem(number, "timetable.bad_account", {"value": account}))
            continue
        if account in accounts and accounts[account][0] != name:
            problems.append(CsvProblem(number, "timetable.account_twice",
                                       {"value": account, "cls": accounts[account][0],
                                        "line": accounts[account][1]}))
            continue
        classes.setdefault(name, number)
        if account:
            accounts.setdefault(account, (name, number))
    if not classes and not problems:
        raise fail(Invalid, "timetable.classes_csv_empty")
    if problems:
        return (0, 0), problems
    ids = {name: ensure_class(db, name).id for name in classes}
    for account, (name, _line) in accounts.items():
        found = db.get(StudentAccount, account)
        if found is None:
            db.add(StudentAccount(os_user=account, class_id=ids[name]))
        else:
            found.class_id = ids[name]
    db.flush()
    audit(db, actor=viewer.name, action="timetable.classes_import",
          detail={"classes": len(classes), "accounts": len(accounts)})
    return (len(classes), len(accounts)), []


def student_accounts(db: Session) -> dict[int, int]:
    """Class id → how many students' OS accounts are mapped to it."""
    counts: dict[int, int] = {}
    for class_id in db.scalars(select(StudentAccount.class_id)):
        counts[class_id] = counts.get(class_id, 0) + 1
    return counts


def class_at(db: Session, *, os_user: str | None, agent_id: str | None, at: datetime) -> SchoolClass | None:
    """The class of the student behind an event: their own OS account's class if it is mapped;
    else the class of the lesson running at that seat's room then, or of the timetable's period."""
    if os_user:
        account = db.get(StudentAccount, os_user)
        if account is not None:
            return db.get(SchoolClass, account.class_id)
    ws = db.get(Workstation, agent_id) if agent_id else None
    if ws is None or ws.room_id is None:
        return None
    from policy_server.lessons.models import Lesson

    lesson = db.scalar(select(Lesson).where(Lesson.room_id == ws.room_id, Lesson.starts_at <= at,
                                            Lesson.ends_at > at, Lesson.class_id.is_not(None))
                       .where((Lesson.ended_at.is_(None)) | (Lesson.ended_at > at))
                       .order_by(Lesson.starts_at.desc()).limit(1))
    if lesson is not None:
        return db.get(SchoolClass, lesson.class_id)
    period = period_at(db, ws.room_id, at)
    return db.get(SchoolClass, period.class_id) if period is not None and period.class_id else None


def class_teachers(db: Session, class_id: int) -> list[Person]:
    """The class teacher(s) of a class (`person_classes.class_teacher`, 001 §2.7), enabled only."""
    return list(db.scalars(select(Person).join(PersonClass, PersonClass.person_id == Person.id)
                           .where(PersonClass.class_id == class_id, PersonClass.class_teacher.is_(True),
                                  Person.disabled.is_(False)).order_by(Person.id)))


def _admin_only(viewer: Viewer) -> None:
    if viewer.role != Role.admin:
        from policy_server.timetable.errors import Refused

        raise fail(Refused, "lesson.not_yours")
