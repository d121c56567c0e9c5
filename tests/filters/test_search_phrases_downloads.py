"""Search queries and SafeSearch, phrase scores, download rules."""

from pathlib import Path

import pytest

from filters.downloads import check_download, classify
from filters.phrases import DATA_DIR, PhraseMatcher, PhraseProblem, fold, parse_list, score
from filters.search import engine_for_host, extract_query, safe_search

from .helpers import make_policy


@pytest.mark.parametrize("url,engine,text", [
    ("https://www.google.com/search?q=%D0%BA%D0%B0%D0%BA+%D0%B4%D0%B5%D0%BB%D0%B0&hl=ru", "google",
     "как дела"),
    ("https://www.google.kg/search?q=a%26b&safe=off", "google", "a&b"),
    ("https://yandex.ru/search/?text=%D0%BF%D0%BE%D0%B3%D0%BE%D0%B4%D0%B0&lr=10309", "yandex", "погода"),
    ("https://ya.ru/images/search?text=cats", "yandex", "cats"),
    ("https://www.bing.com/search?q=school+kg", "bing", "school kg"),
    ("https://duckduckgo.com/?q=test&ia=web", "duckduckgo", "test"),
    ("https://html.duckduckgo.com/html/?q=test", "duckduckgo", "test"),
    ("https://www.youtube.com/results?search_query=physics+lesson", "youtube", "physics lesson"),
    ("https://go.mail.ru/search?q=%D1%82%D0%B5%D1%81%D1%82", "mailru", "тест"),
])
def test_extract_query(url, engine, text):
    q = extract_query(url)
    assert (q.engine, q.text) == (engine, text)


def test_not_searches():
    assert extract_query("https://www.google.com/maps?q=bishkek") is None
    assert extract_query("https://mail.google.com/search?q=x") is None
    assert extract_query("https://example.com/search?q=x") is None
    assert extract_query("https://www.google.com/search?q=") is None
    assert extract_query("not a url at all \x00") is None
    assert engine_for_host("WWW.GOOGLE.COM.KG.") == "google"
    assert engine_for_host("docs.google.com") is None


@pytest.mark.parametrize("url,param", [
    ("https://www.google.com/search?q=x&safe=off", "safe=active"),
    ("https://yandex.kg/search/?text=x", "family=yes"),
    ("https://www.bing.com/search?q=x&adlt=off", "adlt=strict"),
    ("https://duckduckgo.com/?q=x&kp=-2", "kp=1"),
])
def test_safe_search_parameters_replace_the_users(url, param):
    s = safe_search(url)
    assert s.changed and param in s.url
    key = param.split("=")[0]
    assert s.url.count(key + "=") == 1
    assert "q=x" in s.url or "text=x" in s.url
    assert safe_search(s.url).url == s.url  # already safe: no change


def test_youtube_header_and_untouched_urls():
    s = safe_search("https://www.youtube.com/watch?v=abc")
    assert s.headers == {"YouTube-Restrict": "Strict"} and s.url.endswith("v=abc")
    plain = safe_search("https://example.com/search?q=x")
    assert (plain.changed, plain.engine, plain.url) == (False, None, "https://example.com/search?q=x")
    assert not safe_search("https://www.google.com/maps").changed


def test_folding_handles_kyrgyz_and_lookalikes():
    assert fold("ҢӨҮ") == fold("нОу")
    assert fold("cуицид") == fold("суицид")  # Latin c
    assert fold("Ёлка") == fold("елка")


def test_phrase_scores_with_negative_context():
    assert score("как покончить с собой").total >= 40
    assert score("СУИЦИДАЛЬНЫЕ мысли").phrases == ["суицид*"]
    assert score("профилактика суицида в школе").total <= 0
    assert score("Мугалимди өлтүрөм").lists == {"violence"}
    assert score("мугалимди олтурем").total > 0  # typed without Kyrgyz letters
    assert score("погода в Бишкеке, урок физики").total == 0
    s = score("суицид суицид")
    assert s.matches["суицид*"] == 2 and s.total == 80


def test_shipped_lists_are_marked_for_the_school_and_parse():
    files = sorted(DATA_DIR.glob("*.txt"))
    assert {f.stem for f in files} >= {"self_harm", "extremism", "violence", "drugs"}
    for f in files:
        text = f.read_text("utf-8")
        assert "STARTER" in text and "EXTEND" in text
        assert parse_list(text, name=f.stem, source=str(f))


def test_bad_phrase_line_names_file_and_line(tmp_path: Path):
    with pytest.raises(PhraseProblem, match="mine.txt:2: a line starts with its weight"):
        parse_list("10 ok\nnot-a-weight phrase\n", source="mine.txt")
    (tmp_path / "mine.txt").write_text("25 custom phrase\n", "utf-8")
    assert PhraseMatcher.load(directory=tmp_path).score("A Custom Phrase here").total == 25


def test_download_classification():
    assert classify(url="https://x.kg/setup.EXE") == {"executable"}
    assert classify(url="https://x.kg/get?id=1", content_disposition='attachment; filename="game.msi"') == {
        "installer"}
    assert classify(content_type="application/zip; charset=binary") == {"archive"}
    assert classify(url="https://x.kg/a.tar.gz") == {"archive"}
    assert classify(url="https://x.kg/song.mp3") == {"media"}
    assert classify(url="https://x.kg/page.html", content_type="text/html") == frozenset()


def test_download_rules_per_group():
    policy = make_policy(filtering={"download_block": {"teacher": ["torrent"]}})
    v = check_download(policy, group="student", url="https://x.kg/setup.exe")
    assert (v.action, v.blocked_kinds, v.clauses) == ("block", ("executable",), ("000 §8.1",))
    assert check_download(policy, group="student", url="https://x.kg/lesson.pdf").action == "allow"
    assert check_download(policy, group="teacher", url="https://x.kg/setup.exe").action == "allow"
    assert check_download(policy, group="teacher", url="https://x.kg/a.torrent").action == "block"
