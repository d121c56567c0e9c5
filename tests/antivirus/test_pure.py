"""Pure parts: the resumable walk order, the schedule, the health assessment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.antivirus.clamd import ClamdVersion
from agent.antivirus.health import assess
from agent.antivirus.media import removable_mounts
from agent.antivirus.schedule import decide, latest_window
from agent.antivirus.walker import walk
from policy_server.protocol import AntivirusSection

BISHKEK = "Asia/Bishkek"  # UTC+6


def _tree(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def test_walk_is_sorted_skips_excluded_and_symlinks(tmp_path):
    _tree(tmp_path, ["b/2", "b/1", "a", "c/x/y", "skip/me"])
    (tmp_path / "link").symlink_to(tmp_path / "a")
    paths = [e.path for e in walk([tmp_path], exclude=[tmp_path / "skip"])]
    assert paths == [str(tmp_path / n) for n in ["a", "b/1", "b/2", "c/x/y"]]


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=13))
def test_walk_resumes_exactly_after_any_position(tmp_path_factory, cut):
    root = tmp_path_factory.mktemp("walk")
    _tree(root, ["a/1", "a/2", "a/b/3", "a/b/4", "c", "d/e/f/5", "d/6", "g", "h/7", "h/8", "i/9", "j"])
    second = tmp_path_factory.mktemp("walk2")
    _tree(second, ["z1", "z2/z3"])
    everything = list(walk([root, second]))
    assert len(everything) == 14
    rest = [e.path for e in walk([root, second], resume_after=everything[cut].position)]
    assert rest == [e.path for e in everything[cut + 1:]]


def _at(text: str) -> datetime:
    # local Bishkek time → aware UTC
    return datetime.fromisoformat(text + "+06:00").astimezone(UTC)


SATURDAY = AntivirusSection(scan_day=5, window_start="10:00", window_end="16:00")


def test_latest_window_is_the_previous_saturday():
    from zoneinfo import ZoneInfo

    start, end = latest_window(_at("2026-11-25T09:00"), SATURDAY, ZoneInfo(BISHKEK))  # a Wednesday
    assert start == _at("2026-11-21T10:00") and end == _at("2026-11-21T16:00")


def test_runs_inside_the_window_and_not_twice():
    now = _at("2026-11-21T11:00")  # Saturday
    assert decide(now, SATURDAY, last_completed=None, idle=False, tz=BISHKEK).run
    done = decide(now, SATURDAY, last_completed=_at("2026-11-21T10:30"), idle=True, tz=BISHKEK)
    assert not done.run and done.reason == "done for this week"
    previous_week = decide(now, SATURDAY, last_completed=_at("2026-11-14T12:00"), idle=False, tz=BISHKEK)
    assert previous_week.run and not previous_week.catch_up


def test_missed_window_catches_up_only_when_idle():
    monday = _at("2026-11-23T17:30")
    busy = decide(monday, SATURDAY, last_completed=_at("2026-11-14T12:00"), idle=False, tz=BISHKEK)
    assert not busy.run and busy.catch_up
    idle = decide(monday, SATURDAY, last_completed=_at("2026-11-14T12:00"), idle=True, tz=BISHKEK)
    assert idle.run and idle.catch_up
    # after a catch-up on Monday, nothing more until next Saturday
    later = decide(_at("2026-11-26T18:00"), SATURDAY, last_completed=_at("2026-11-23T18:00"), idle=True,
                   tz=BISHKEK)
    assert not later.run


def test_window_over_midnight():
    night = AntivirusSection(scan_day=4, window_start="22:00", window_end="04:00")  # Friday night
    assert decide(_at("2026-11-21T02:00"), night, last_completed=None, idle=False, tz=BISHKEK).run
    assert not decide(_at("2026-11-21T05:00"), night, last_completed=None, idle=False, tz=BISHKEK).run


def test_health_assessment():
    now = datetime(2026, 11, 22, tzinfo=UTC)
    fresh = ClamdVersion("1.4.6", "27400", now - timedelta(days=2))
    assert assess(fresh, now=now, max_age_days=7).problem is None
    stale = assess(ClamdVersion("1.4.6", "27000", now - timedelta(days=9)), now=now, max_age_days=7)
    assert stale.problem == "signatures_stale" and stale.signature_age_days == 9.0
    assert assess(ClamdVersion("1.4.6", None, None), now=now, max_age_days=7).problem == "signatures_unknown"
    assert assess(None, now=now, max_age_days=7).problem == "clamd_unreachable"
    assert assess(None, now=now, max_age_days=7, socket_exists=False).problem == "clamd_missing"


def test_removable_mounts():
    text = ("/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /media/ali/MY\\040STICK vfat rw 0 0\n"
            "proc /proc proc rw 0 0\n/dev/sdc1 /run/media/x/DISK exfat rw 0 0\n")
    assert removable_mounts(text) == {"/media/ali/MY STICK", "/run/media/x/DISK"}


def test_download_watcher_ignores_temporary_and_clamd_files():
    from agent.antivirus.downloads import is_temporary

    assert is_temporary("/home/a/Downloads/game.exe.part")
    assert is_temporary("/home/a/Downloads/x.crdownload")
    assert is_temporary("/tmp/clamav-4f2a.tmp/unpacked/file1")
    assert not is_temporary("/home/a/Downloads/game.exe")


def test_full_scan_never_enters_pseudo_or_network_mounts(tmp_path):
    from agent.antivirus.walker import pseudo_filesystem_mounts

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n"
                      "server:/share /mnt/school\\040share nfs4 rw 0 0\n/dev/sdb1 /media/x vfat rw 0 0\n")
    assert pseudo_filesystem_mounts(mounts) == ["/proc", "/mnt/school share"]
