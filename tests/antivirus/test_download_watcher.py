"""The download watcher watches a folder with its subfolders only while they are few, so a
student cannot make the agent spend root's inotify watches (and its own memory and start time)
on a million folders in /tmp; it starts without walking the folders on the agent's start path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.antivirus import downloads
from agent.antivirus.downloads import DownloadWatcher, count_subfolders
from tests.support.waiting import wait_until


def _tree(root: Path, folders: int) -> None:
    for i in range(folders):
        (root / f"d{i // 10}" / f"e{i}").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def watcher_of(tmp_path):
    started: list[DownloadWatcher] = []

    def make(*patterns: str, max_subfolders: int = 20) -> tuple[DownloadWatcher, list[str]]:
        seen: list[str] = []
        watcher = DownloadWatcher(patterns, seen.append, max_subfolders=max_subfolders)
        watcher.start()
        started.append(watcher)
        return watcher, seen

    yield make
    for watcher in started:
        watcher.stop()


def test_counting_stops_just_past_the_limit(tmp_path):
    _tree(tmp_path, 300)  # 30 "d" folders, 300 "e" folders below them
    assert count_subfolders(str(tmp_path), limit=1000) == 330
    assert 11 <= count_subfolders(str(tmp_path), limit=10) <= 11 + 30  # one folder's entries past 10
    (tmp_path / "link").symlink_to(tmp_path / "d0")
    assert count_subfolders(str(tmp_path), limit=1000) == 330  # links are not followed


def test_a_folder_with_few_subfolders_is_watched_with_them(tmp_path, watcher_of):
    downloads_dir = tmp_path / "Downloads"
    (downloads_dir / "unpacked").mkdir(parents=True)
    watcher, seen = watcher_of(str(downloads_dir))
    assert wait_until(lambda: watcher.folders == [str(downloads_dir)])
    (downloads_dir / "unpacked" / "game.exe").write_bytes(b"MZ")
    assert wait_until(lambda: str(downloads_dir / "unpacked" / "game.exe") in seen)
    assert watcher.top_level_only == []


def test_a_crowded_folder_is_watched_at_its_top_level_only(tmp_path, watcher_of):
    crowded = tmp_path / "tmp"
    _tree(crowded, 50)
    watcher, seen = watcher_of(str(crowded))
    assert wait_until(lambda: watcher.top_level_only == [str(crowded)])
    (crowded / "d0" / "e0" / "deep.exe").write_bytes(b"MZ")
    (crowded / "top.exe").write_bytes(b"MZ")
    assert wait_until(lambda: str(crowded / "top.exe") in seen)  # new files at the top are still scanned
    time.sleep(0.3)
    assert str(crowded / "d0" / "e0" / "deep.exe") not in seen  # the weekly full scan covers those


def test_a_tree_growing_past_the_limit_is_noticed_within_seconds(tmp_path, watcher_of, monkeypatch):
    monkeypatch.setattr(downloads, "NEW_FOLDERS_BEFORE_RECOUNT", 10)
    growing = tmp_path / "tmp"
    growing.mkdir()
    watcher, _seen = watcher_of(str(growing))  # a new-folder count every minute would be too late:
    watcher.rescan_folders_s = 3600.0          # the recount must come from the new folders themselves
    assert wait_until(lambda: watcher.folders == [str(growing)])
    assert watcher.top_level_only == []
    for i in range(60):
        (growing / f"f{i}").mkdir()
    assert wait_until(lambda: watcher.top_level_only == [str(growing)], timeout=8.0)


def test_start_returns_before_the_folders_are_walked(tmp_path, monkeypatch):
    walking, release = threading.Event(), threading.Event()

    def slow_count(folder: str, *, limit: int) -> int:
        walking.set()
        release.wait(10)
        return 0

    monkeypatch.setattr(downloads, "count_subfolders", slow_count)
    watcher = DownloadWatcher([str(tmp_path)], lambda _path: None)
    try:
        watcher.start()  # would block here if it walked the folders itself
        assert walking.wait(5) and watcher.folders == []
        release.set()
        assert wait_until(lambda: watcher.folders == [str(tmp_path)])
    finally:
        release.set()
        watcher.stop()
