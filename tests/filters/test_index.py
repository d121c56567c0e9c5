"""List importers and the compiled index: formats, bad lines, semantics of domain and
URL entries, the file format's checks, the overlay."""

import os
import struct

import pytest

from filters.importers import Problem, parse_entry, read_plain, read_ut1, sniff_format
from filters.index import (
    HAS_PATHS,
    CategoryIndex,
    IndexError_,
    Overlay,
    Source,
    compile_index,
    key_of,
    path_expressions,
)


def write(path, text):
    path.write_text(text, "utf-8")
    return path


def test_plain_list_reports_bad_lines_with_file_and_line_and_goes_on(tmp_path):
    f = write(tmp_path / "games.txt", "# my list\nfun.example\n\nnot a domain\nlocalhost\n"
                                      "Good.Example./path/../x\n*.wild.example\nlast.example\n")
    problems: list[Problem] = []
    entries = list(read_plain(f, ("games",), problems.append))
    expected = ["fun.example", "good.example/x", "wild.example", "last.example"]
    assert [e.expression for e in entries] == expected
    assert [(p.line, p.text) for p in problems] == [(4, "not a domain"), (5, "localhost")]
    assert str(problems[0]).startswith(f"{f}:4: ")


def test_hosts_and_adguard_formats(tmp_path):
    hosts = write(tmp_path / "hosts", "127.0.0.1 localhost\n0.0.0.0 ads.example tracker.example # c\n"
                                      "0.0.0.0\n::1 ip6-localhost\n")
    adguard = write(tmp_path / "ag.txt", "! AdGuard\n[Adblock Plus 2.0]\n||bad.example^\n"
                                         "||x.example^$third-party\n@@||ok.example^\nexample.com##.banner\n/regex/\n")
    assert sniff_format(hosts) == "hosts" and sniff_format(adguard) == "adguard"
    problems = []
    got = [e.host for e in read_plain(hosts, ("ads",), problems.append, fmt="hosts")]
    assert got == ["ads.example", "tracker.example"]
    assert [p.line for p in problems] == [3]
    problems = []
    got = [e.host for e in read_plain(adguard, ("ads",), problems.append, fmt="adguard")]
    assert got == ["bad.example", "x.example"]
    assert [p.line for p in problems] == [5, 6, 7]


def test_parse_entry_kinds():
    assert parse_entry("example.kg") == ("example.kg", None)
    assert parse_entry("http://Example.KG/") == ("example.kg", None)
    assert parse_entry("example.kg/a/b") == ("example.kg", "/a/b")
    assert parse_entry("example.kg/a?x=1") == ("example.kg", "/a?x=1")
    assert parse_entry("2130706433") == ("127.0.0.1", None)  # an IP in any spelling
    assert parse_entry("intranet") == "not a domain name (a dot is needed, as in example.kg)"
    assert parse_entry("1.2.3.4") == ("1.2.3.4", None)
    assert isinstance(parse_entry("bad host.kg"), str)


def test_ut1_aliases_as_symlinks_and_as_alias_files(tmp_path):
    root = tmp_path / "ut1"
    (root / "adult").mkdir(parents=True)
    write(root / "adult" / "domains", "x.example\n")
    write(root / "adult" / "urls", "y.example/videos\n")
    (root / "porn").symlink_to("adult")  # a real symlink
    (root / "drogue").mkdir()
    write(root / "drogue" / "domains", "weed.example\n")
    write(root / "drugs", "drogue\n")  # an alias file, as in copies made without symlinks
    (root / "cooking").mkdir()
    write(root / "cooking" / "domains", "food.example\n")
    from filters.importers import Ut1Report

    report = Ut1Report({}, [])
    entries = list(read_ut1(root, lambda p: None, report=report))
    assert sorted((e.expression, e.categories) for e in entries) == [
        ("weed.example", ("drugs",)), ("x.example", ("porn",)), ("y.example/videos", ("porn",))]
    assert report.imported == {"adult": "adult", "porn": "adult", "drogue": "drogue", "drugs": "drogue"}
    assert report.skipped == ["cooking"]


def test_missing_ut1_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="UT1 directory .* does not exist"):
        list(read_ut1(tmp_path / "nope", lambda p: None))


@pytest.fixture()
def small_index(tmp_path):
    games = write(tmp_path / "games.txt", "games.example\nplay.example/flash\nmixed.example/a/b/\n")
    porn = write(tmp_path / "porn.txt", "xxx.example\nmixed.example\n10.1.2.3\n")
    out = tmp_path / "small.kidx"
    sources = [Source(str(games), "plain", ("games",)), Source(str(porn), "auto", ("porn",))]
    stats = compile_index(sources, out)
    assert stats.entries == 6 and stats.problems == 0
    return CategoryIndex.open(out, verify=True)


def test_domain_entries_match_host_and_subdomains(small_index):
    assert small_index.categories_of("http://games.example/") == {"games"}
    assert small_index.categories_of("https://www.Games.Example:443/any?x") == {"games"}
    assert small_index.categories_of("http://notgames.example/") == frozenset()
    assert small_index.categories_of("http://games.example.evil/") == frozenset()
    assert small_index.categories_of("http://0x0a.1.2.3/") == {"porn"}


def test_url_entries_match_path_and_below_only(small_index):
    cat = small_index.categories_of
    assert cat("http://play.example/flash") == {"games"}
    assert cat("http://play.example/flash/game1.swf") == {"games"}
    assert cat("http://play.example/flash?id=1") == {"games"}
    assert cat("http://www.play.example/flash/x") == {"games"}
    assert cat("http://play.example/flashy") == frozenset()
    assert cat("http://play.example/") == frozenset()
    assert cat("http://mixed.example/a/b/c") == {"games", "porn"}
    assert cat("http://mixed.example/a/bc") == {"porn"}
    match = small_index.lookup("http://mixed.example/a/b/c")
    assert set(match.expressions) == {"mixed.example", "mixed.example/a/b/"}


def test_path_expressions():
    assert path_expressions("/a/b/c.html", "q=1") == [
        "/a/b/c.html?q=1", "/a/b/c.html", "/a", "/a/", "/a/b", "/a/b/"]


def test_header_info_and_size(small_index, tmp_path):
    info = small_index.info()
    assert info["format_version"] == 1
    # 6 entries + a "has paths" key for play.example (mixed.example shares its domain key)
    assert info["entries"] == 7
    assert "porn" in info["categories"] and len(small_index.sha256) == 64


def test_broken_files_are_refused_with_a_clear_message(small_index, tmp_path):
    good = open(small_index.path, "rb").read()
    empty = tmp_path / "empty.kidx"
    empty.write_bytes(b"")
    with pytest.raises(IndexError_, match="empty"):
        CategoryIndex.open(empty)
    bad_magic = tmp_path / "magic.kidx"
    bad_magic.write_bytes(b"NOTKIDX!" + good[8:])
    with pytest.raises(IndexError_, match="not a Kalkan index"):
        CategoryIndex.open(bad_magic)
    truncated = tmp_path / "trunc.kidx"
    truncated.write_bytes(good[:-16])
    with pytest.raises(IndexError_, match="truncated"):
        CategoryIndex.open(truncated)
    newer = tmp_path / "newer.kidx"
    newer.write_bytes(good[:8] + struct.pack("<I", 99) + good[12:])
    with pytest.raises(IndexError_, match="format 99"):
        CategoryIndex.open(newer)
    flipped = bytearray(good)
    flipped[-3] ^= 0xFF
    damaged = tmp_path / "damaged.kidx"
    damaged.write_bytes(bytes(flipped))
    CategoryIndex.open(damaged)  # opening alone does not read the body …
    with pytest.raises(IndexError_, match="damaged"):
        CategoryIndex.open(damaged, verify=True)  # … verifying does
    with pytest.raises(IndexError_, match="does not exist"):
        CategoryIndex.open(tmp_path / "missing.kidx")


def test_failed_compile_leaves_no_file(tmp_path):
    out = tmp_path / "x.kidx"
    with pytest.raises(ValueError, match="unknown category 'nonsense'"):
        compile_index([Source(str(write(tmp_path / "l.txt", "a.example\n")), "plain", ("nonsense",))], out)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_overlay_adds_without_rebuilding(small_index):
    overlay = Overlay({"school-bad.example": ["games"], "xxx.example/school-ok": ["education"]})
    index = small_index.with_overlay(overlay)
    assert index.categories_of("http://school-bad.example/x") == {"games"}
    assert index.categories_of("http://xxx.example/school-ok/page") == {"porn", "education"}
    assert index.categories_of("http://xxx.example/other") == {"porn"}
    assert small_index.categories_of("http://school-bad.example/") == frozenset()  # base untouched
    with pytest.raises(ValueError, match="unknown category"):
        overlay.add("a.example", ["nonsense"])
    with pytest.raises(ValueError, match="bad entry"):
        overlay.add("no spaces.example", ["games"])


def test_overlay_round_trips_through_json(tmp_path):
    overlay = Overlay()
    assert overlay.add("HTTP://New.Example/", ["games"]) == "new.example"
    overlay.save(tmp_path / "overlay.json")
    again = Overlay.load(tmp_path / "overlay.json")
    assert CategoryIndex.empty(again).categories_of("http://a.new.example/") == {"games"}


def test_empty_index_knows_nothing():
    assert CategoryIndex.empty().categories_of("http://anything.example/") == frozenset()


def test_hash_keys_have_no_false_positives_on_a_sample(tmp_path):
    names = [f"site{i}.example" for i in range(20000)]
    f = write(tmp_path / "many.txt", "\n".join(names) + "\n")
    out = tmp_path / "many.kidx"
    compile_index([Source(str(f), "plain", ("games",))], out)
    index = CategoryIndex.open(out)
    assert all(index.categories_of(f"http://{n}/") == {"games"} for n in names[:2000])
    misses = sum(bool(index.categories_of(f"http://other{i}.example/")) for i in range(20000))
    assert misses == 0
    assert key_of("a") != key_of("b") and not key_of("site1.example") & 0 and HAS_PATHS == 1 << 63
