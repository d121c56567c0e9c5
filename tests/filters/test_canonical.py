"""Canonical URLs: Safe Browsing's published examples, Kalkan's additions, and
property tests (never raises, idempotent)."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from filters.canonical import canonical_host, canonicalize, host_suffixes, lookup_expressions

# From the Safe Browsing v4 "URLs and hashing" documentation.
SAFE_BROWSING = [
    ("http://host/%25%32%35", "http://host/%25"),
    ("http://host/%25%32%35%25%32%35", "http://host/%25%25"),
    ("http://host/%2525252525252525", "http://host/%25"),
    ("http://host/asdf%25%32%35asd", "http://host/asdf%25asd"),
    ("http://host/%%%25%32%35asd%%", "http://host/%25%25%25asd%25%25"),
    ("http://www.google.com/", "http://www.google.com/"),
    ("http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/%77%77%77%2E%65%62%61%79%2E%63%6F%6D/",
     "http://168.188.99.26/.secure/www.ebay.com/"),
    ("http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx"
     "=hgplmcx/", "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-"
     "xplmvalidateinfoswqpcmlx=hgplmcx/"),
    ("http://host%23.com/%257Ea%2521b%2540c%2523d%2524e%25f%255E00%252611%252A22%252833%252944_55%252B",
     "http://host%23.com/~a!b@c%23d$e%25f^00&11*22(33)44_55+"),
    ("http://3279880203/blah", "http://195.127.0.11/blah"),
    ("http://www.google.com/blah/..", "http://www.google.com/"),
    ("www.google.com/", "http://www.google.com/"),
    ("www.google.com", "http://www.google.com/"),
    ("http://www.evil.com/blah#frag", "http://www.evil.com/blah"),
    ("http://www.GOOgle.com/", "http://www.google.com/"),
    ("http://www.google.com.../", "http://www.google.com/"),
    ("http://www.google.com/foo\tbar\rbaz\n2", "http://www.google.com/foobarbaz2"),
    ("http://www.google.com/q?", "http://www.google.com/q?"),
    ("http://www.google.com/q?r?", "http://www.google.com/q?r?"),
    ("http://www.google.com/q?r?s", "http://www.google.com/q?r?s"),
    ("http://evil.com/foo#bar#baz", "http://evil.com/foo"),
    ("http://evil.com/foo;", "http://evil.com/foo;"),
    ("http://evil.com/foo?bar;", "http://evil.com/foo?bar;"),
    ("http://\x01\x80.com/", "http://%01%C2%80.com/"),
    ("http://notrailingslash.com", "http://notrailingslash.com/"),
    ("http://www.gotaport.com:1234/", "http://www.gotaport.com/"),
    ("  http://www.google.com/  ", "http://www.google.com/"),
    ("http:// leadingspace.com/", "http://%20leadingspace.com/"),
    ("http://%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("https://www.securesite.com/", "https://www.securesite.com/"),
    ("http://host.com/ab%23cd", "http://host.com/ab%23cd"),
    ("http://host.com//twoslashes?more//slashes", "http://host.com/twoslashes?more//slashes"),
]


@pytest.mark.parametrize("raw,expected", SAFE_BROWSING)
def test_safe_browsing_examples(raw, expected):
    assert canonicalize(raw) == expected


KALKAN = [
    # userinfo tricks: the host is what follows the last @
    ("http://school.kg@evil.example/", "http://evil.example/"),
    ("http://school.kg:pass@evil.example:8080/x", "http://evil.example/x"),
    # a backslash ends the host like a browser does
    ("http://evil.example\\@school.kg/", "http://evil.example/@school.kg/"),
    # IPv4 spellings
    ("http://0x7f.1/", "http://127.0.0.1/"),
    ("http://0177.0.0.01/", "http://127.0.0.1/"),
    ("http://2130706433/", "http://127.0.0.1/"),
    ("http://1.2.3/", "http://1.2.0.3/"),
    ("http://256.1.1.1/", "http://256.1.1.1/"),  # not an IP: left as a name
    # IPv6
    ("http://[2001:DB8::0001]:8080/x", "http://[2001:db8::1]/x"),
    # IDN → punycode, ideographic full stop as a dot
    ("http://мектеп.kg/", "http://xn--e1aaogsq.kg/"),
    ("http://МЕКТЕП.KG/", "http://xn--e1aaogsq.kg/"),
    ("http://мектеп\u3002kg/", "http://xn--e1aaogsq.kg/"),
    # dot segments, double slashes, escaped dots
    ("http://a.kg/x/./y/../z", "http://a.kg/x/z"),
    ("http://a.kg/%2e%2e/%2E%2e/etc", "http://a.kg/etc"),
    ("http://a.kg/a\\b", "http://a.kg/a/b"),
    ("HTTPS://A.KG", "https://a.kg/"),
    ("//a.kg/x", "http://a.kg/x"),
]


@pytest.mark.parametrize("raw,expected", KALKAN)
def test_kalkan_examples(raw, expected):
    assert canonicalize(raw) == expected


def test_lookup_expressions_follow_safe_browsing():
    assert lookup_expressions(canonicalize("http://a.b.c/1/2.html?param=1")) == [
        "a.b.c/1/2.html?param=1", "a.b.c/1/2.html", "a.b.c/", "a.b.c/1/",
        "b.c/1/2.html?param=1", "b.c/1/2.html", "b.c/", "b.c/1/",
    ]
    exprs = lookup_expressions(canonicalize("http://a.b.c.d.e.f.g/1.html"))
    hosts = sorted({e.split("/")[0] for e in exprs})
    assert hosts == ["a.b.c.d.e.f.g", "c.d.e.f.g", "d.e.f.g", "e.f.g", "f.g"]
    assert lookup_expressions(canonicalize("http://1.2.3.4/1/")) == ["1.2.3.4/1/", "1.2.3.4/"]
    deep = lookup_expressions(canonicalize("http://a.kg/1/2/3/4/5/6/x.html"))
    assert deep == ["a.kg/1/2/3/4/5/6/x.html", "a.kg/", "a.kg/1/", "a.kg/1/2/", "a.kg/1/2/3/"]
    assert len(lookup_expressions(canonicalize("http://a.b.c.d.e.f.g/1/2/3/4/5?q=1"))) <= 30


def test_host_suffixes_without_limit_for_domain_lists():
    assert host_suffixes("a.b.c.d.e.f.g", limit=None)[-1] == "f.g"
    assert len(host_suffixes("a.b.c.d.e.f.g", limit=None)) == 6


def test_canonical_host_alone():
    assert canonical_host("WWW.Example.KG.") == "www.example.kg"
    assert canonical_host("0x7f.0.0.1") == "127.0.0.1"


url_like = st.one_of(
    st.text(max_size=200),
    st.builds(lambda s, h, p: f"{s}{h}{p}",
              st.sampled_from(["http://", "HTTPS://", "", "//", "ftp://", "http:/"]),
              st.text(alphabet="aZ09.-_@:%[]\\/ \t\u0436\u3002xX#?", max_size=40),
              st.text(alphabet="/.%2eE5cC?#&=a\\ \u0436\x00\x7f", max_size=60)),
)


@settings(max_examples=600, deadline=None)
@given(url_like)
@example("%¡00")  # punycode joined a stray '%' with hex digits into a new escape (found by CI)
def test_canonicalize_never_raises_and_is_idempotent(url):
    once = canonicalize(url)
    assert isinstance(once, str) and once.isascii()
    assert canonicalize(once) == once
    assert lookup_expressions(once)  # never raises either, never empty


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcxyz09-.", min_size=1, max_size=30), st.text(alphabet="abc/._-?=", max_size=30))
def test_fast_and_slow_paths_agree(host, path):
    from filters.canonical import _canonicalize_slow

    url = f"http://{host}/{path}"
    assert canonicalize(url) == _canonicalize_slow(url)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/x?y=1", "https://example.com:443/", "http://example.com:80",
    "http://a.b:65535/p/q", "http://example.com:99999/", "http://1.2.3.4:0/a/../b",
])
def test_the_fast_path_drops_a_port_exactly_as_the_full_rules_do(url):
    from filters.canonical import _canonicalize_slow

    assert canonicalize(url) == _canonicalize_slow(url)
