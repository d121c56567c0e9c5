"""The addon's one-pass request helpers answer exactly what mitmproxy's own properties answer."""

from mitmproxy import http
from mitmproxy.test import tutils

from agent.proxy.addon import _header_values, _host_and_url


def _request(**kw) -> http.Request:
    return tutils.treq(**kw)


def test_host_and_url_equal_pretty_host_and_pretty_url() -> None:
    cases = [
        _request(),  # absolute form with a Host header
        _request(host="10.0.0.1", port=8080, headers=http.Headers(host="Example.COM:8080")),
        _request(scheme=b"https", host="1.2.3.4", port=443, headers=http.Headers(host="bank.test")),
        _request(headers=http.Headers()),  # no Host header: the request line's host
        _request(method=b"CONNECT", authority=b"news.test:443", host="news.test", port=443,
                 path=b"", headers=http.Headers()),
    ]
    more = [
        _request(method=b"OPTIONS", path=b"*"),  # asterisk form: the URL has no path
        _request(method=b"CONNECT", authority=b"news.test:443", host="news.test", port=443, path=b"",
                 headers=http.Headers(host="Other.test")),  # CONNECT with a Host header
        _request(scheme=b"https", headers=http.Headers(host="xn--80ak6aa92e.kg")),  # IDNA
        _request(path=b"/a%20b?c=d&e", headers=http.Headers(host="Example.COM:80")),  # default port
        _request(http_version=b"HTTP/3", authority=b"", headers=http.Headers(host="h3.test")),
    ]
    http2 = _request(http_version=b"HTTP/2.0", authority=b"Video.test:8443", headers=http.Headers())
    for req in [*cases, *more, http2]:
        assert _host_and_url(req) == (req.pretty_host, req.pretty_url)
        # the request hook reads the Host field in its one pass over the headers and hands it in
        host_field = _header_values(req.headers, b"host")[0]
        assert _host_and_url(req, host_field) == (req.pretty_host, req.pretty_url)


def test_header_values_equal_headers_get() -> None:
    headers = http.Headers([(b"Content-Type", b"text/html"), (b"X-A", b"1"), (b"x-a", b"2"),
                            (b"Accept", "t\u00e9xt".encode())])
    names = [b"content-type", b"x-a", b"accept", b"content-disposition"]
    assert _header_values(headers, *names) == [headers.get(n.decode()) for n in names]
    assert _header_values(headers, b"x-a") == ["1, 2"]
