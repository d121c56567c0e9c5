"""Platform adapters that do not need a desktop: parsers, command locker, detection."""

from __future__ import annotations

import pytest

from agent.platform.idle import (
    CommandLocker,
    IdleSourceError,
    LogindIdleSource,
    MutterIdleSource,
    detect_idle_source,
    parse_logind_idle,
    parse_mutter_idletime,
)


def test_mutter_answer_is_parsed():
    assert parse_mutter_idletime("(uint64 12345,)\n") == 12.345
    with pytest.raises(IdleSourceError, match="unexpected answer"):
        parse_mutter_idletime("Error: GDBus.Error:org.freedesktop.DBus.Error.ServiceUnknown")


def test_logind_idle_hint_is_parsed():
    out = "IdleHint=yes\nIdleSinceHintMonotonic=5000000\n"
    assert parse_logind_idle(out, now_monotonic_us=65_000_000) == 60.0
    assert parse_logind_idle("IdleHint=no\nIdleSinceHintMonotonic=0\n", now_monotonic_us=9) == 0.0


def test_command_locker_reports_success_and_each_kind_of_failure(tmp_path):
    assert CommandLocker(["true"]).lock().ok
    failed = CommandLocker(["sh", "-c", "echo no locker >&2; exit 4"]).lock()
    assert not failed.ok and "exited with 4" in failed.error and "no locker" in failed.error
    missing = CommandLocker([str(tmp_path / "nope")]).lock()
    assert not missing.ok and "not found" in missing.error
    slow = CommandLocker(["sleep", "5"], timeout_s=0.2).lock()
    assert not slow.ok and "did not finish" in slow.error
    with pytest.raises(ValueError, match="empty"):
        CommandLocker([])


def test_detection_picks_the_desktops_own_source_and_explains_when_there_is_none():
    gnome_wayland = {"WAYLAND_DISPLAY": "wayland-0", "XDG_CURRENT_DESKTOP": "ubuntu:GNOME"}
    assert isinstance(detect_idle_source(gnome_wayland), MutterIdleSource)
    assert isinstance(detect_idle_source({"XDG_SESSION_ID": "c3"}), LogindIdleSource)
    with pytest.raises(IdleSourceError, match="cannot open X display"):
        detect_idle_source({"DISPLAY": ":9999"})
    with pytest.raises(IdleSourceError, match="XDG_SESSION_ID"):
        detect_idle_source({})
