"""The pure core: how a change is classified, accepted changes, the digest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.integrity.diff import apply_accepted, compare, diff, rebase
from agent.integrity.model import FILE, LINK, FileRecord, content_digest


def rec(path="/p", sha="a" * 64, mode=0o755, mtime=1, ctime=1, ino=1, kind=FILE, target=None, uid=0):
    return FileRecord(path, kind, 10, mtime, ctime, ino, 1, mode, uid, 0, sha, target)


def test_each_kind_is_told_apart():
    assert compare(None, rec()).change == "added"
    assert compare(rec(), None).change == "removed"
    assert compare(rec(), rec(sha="b" * 64, mtime=2, ctime=2)).change == "modified"
    assert compare(rec(), rec(mode=0o777, ctime=2)).change == "permissions"
    assert compare(rec(), rec(uid=1000, ctime=2)).change == "permissions"


def test_mtime_restored_is_flagged_only_when_mtime_equals_the_old_one():
    hidden = compare(rec(), rec(sha="b" * 64, ctime=9))
    plain = compare(rec(), rec(sha="b" * 64, mtime=5, ctime=9))
    assert hidden.mtime_restored and not plain.mtime_restored


def test_metadata_only_is_no_change_and_symlink_retarget_is_a_modification():
    assert compare(rec(), rec(mtime=7, ctime=8, ino=9)) is None
    assert compare(rec(kind=LINK, target="a"), rec(kind=LINK, target="b", sha="b" * 64)).change == "modified"


def test_accepting_moves_the_baseline_only_for_the_accepted_content():
    base = {"/p": rec(), "/gone": rec("/gone")}
    current = {"/p": rec(sha="b" * 64, ctime=2)}
    moved, paths = apply_accepted(base, current, [("/p", "c" * 64)])  # a different content was accepted
    assert paths == [] and moved["/p"].sha256 == "a" * 64
    moved, paths = apply_accepted(base, current, [("/p", "b" * 64), ("/gone", None)])
    assert sorted(paths) == ["/gone", "/p"] and diff(moved, current) == []


def test_rebase_takes_changes_in():
    base = {"/a": rec("/a"), "/b": rec("/b")}
    current = {"/a": rec("/a", sha="b" * 64, ctime=3), "/c": rec("/c")}
    assert diff(rebase(base, diff(base, current)), current) == []


@given(
    st.dictionaries(
        st.sampled_from(["/a", "/b", "/c", "/d"]), st.sampled_from(["1" * 64, "2" * 64]), max_size=4
    ),
    st.dictionaries(
        st.sampled_from(["/a", "/b", "/c", "/d"]), st.sampled_from(["1" * 64, "2" * 64]), max_size=4
    ),
)
def test_diff_reports_exactly_the_paths_that_differ(old, new):
    base = {p: rec(p, sha=s) for p, s in old.items()}
    current = {p: rec(p, sha=s) for p, s in new.items()}
    changed = {c.path for c in diff(base, current)}
    assert changed == {p for p in old.keys() | new.keys() if old.get(p) != new.get(p)}


def test_digest_covers_content_and_chain_but_not_the_fast_path_cache():
    a = [rec("/a"), rec("/b")]
    d = content_digest(a, seq=0, prev_digest=None, roots=["/"])
    assert d == content_digest(
        [rec("/a", mtime=5, ctime=6, ino=7), rec("/b")], seq=0, prev_digest=None, roots=["/"]
    )
    assert d != content_digest([rec("/a", sha="b" * 64), rec("/b")], seq=0, prev_digest=None, roots=["/"])
    assert d != content_digest(a, seq=1, prev_digest=d, roots=["/"])
