"""`filtering.seat_allow_list`: an unblock request granted for one seat opens the URL on that
seat only (rule `seat.allow_list`), also outside a lesson and at the ClientHello."""

from datetime import datetime

from filters.decision import decide, decide_host, host_has_path_rules
from filters.policy import FilterPolicy

AT = datetime(2026, 3, 3, 10, 15)


def policy(**filtering) -> FilterPolicy:
    return FilterPolicy.from_bundle(
        {
            "groups": [{"name": "student", "kind": "student"}],
            "filtering": {"block_list": ["games.kg"], **filtering},
        }
    )


def test_the_seat_gets_it_the_others_do_not() -> None:
    p = policy(seat_allow_list={"seat-2": ["games.kg"]}, unsupervised={"student": "open"})
    on_seat = decide(p, None, url="https://games.kg/x", group="student", at=AT, seat="seat-2")
    assert (
        on_seat.action == "allow" and on_seat.rule == "seat.allow_list" and on_seat.matched == ("games.kg",)
    )
    other = decide(p, None, url="https://games.kg/x", group="student", at=AT, seat="seat-1")
    assert other.action == "block" and other.rule == "school.block_list"


def test_outside_a_lesson_the_seat_list_counts_as_an_allow_list() -> None:
    p = policy(seat_allow_list={"seat-2": ["lesson.kg/page"]})  # students: allow-list only (001 §2.9)
    assert (
        decide(p, None, url="http://lesson.kg/page/1", group="student", at=AT, seat="seat-2").action
        == "allow"
    )
    assert (
        decide(p, None, url="http://lesson.kg/other", group="student", at=AT, seat="seat-2").action == "block"
    )
    # a path entry makes the host's verdict depend on the path: intercepted, not blocked whole
    assert decide_host(p, None, host="lesson.kg", group="student", at=AT, seat="seat-2").action == "intercept"
    assert host_has_path_rules(p, None, "lesson.kg")
