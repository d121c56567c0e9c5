"""The addon inside a real mitmdump, real origin servers, curl as real OS users."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.proxy.conftest import STUDENT, TEACHER, base_bundle

pytestmark = pytest.mark.root


def curl(account, proxy, url: str, *extra: str, cacert=None) -> tuple[int, dict, str, str]:
    """(status, headers, body, verbose) of one request through the proxy."""
    args = ["curl", "-sS", "-v", "--max-time", "20", "-x", proxy.url, "-D", "-", url, *extra]
    if cacert is not None:
        args += ["--cacert", str(cacert)]
    result = account.run(args)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.replace("\r\n", "\n").rpartition("\n\n") if url.startswith("https") \
        else result.stdout.replace("\r\n", "\n").partition("\n\n")
    if url.startswith("https"):  # CONNECT's own "200 Connection established" comes first
        blocks = result.stdout.replace("\r\n", "\n").split("\n\n")
        head = [b for b in blocks if b.startswith("HTTP/") and "Connection established" not in b][0]
        body = result.stdout.replace("\r\n", "\n").split(head, 1)[1].lstrip("\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body, result.stderr


def test_plain_http_blocked_for_student_allowed_for_teacher(proxy, accounts):
    status, _, body, _ = curl(accounts["student"], proxy, "http://news.test/world?id=7")
    assert status == 403 and 'id="kalkan-block"' in body
    status, headers, body, _ = curl(accounts["teacher"], proxy, "http://news.test/world?id=7")
    assert status == 200 and "ORIGIN OK news.test" in body
    blocked = proxy.wait_events("web.blocked")
    event = next(e for e in blocked if e["data"]["url"] == "http://news.test/world?id=7")
    assert event["subject"] == {"os_user": STUDENT, "seat": "lab1-01"}
    assert event["data"]["group"] == "student" and event["data"]["rule"].startswith("unsupervised")
    assert not [e for e in blocked if e["subject"]["os_user"] == TEACHER]


def test_https_block_page_served_under_school_ca(proxy, accounts, school_ca_file, origin_ca_file):
    status, _, body, verbose = curl(accounts["student"], proxy, "https://news.test/x", cacert=school_ca_file)
    assert status == 403 and 'id="kalkan-block"' in body
    assert "Kalkan Test School CA" in verbose  # the proxy's certificate, issued by the school CA
    # a teacher's request to the same host is passed through: the origin's own certificate
    status, _, body, verbose = curl(accounts["teacher"], proxy, "https://news.test/x", cacert=origin_ca_file)
    assert status == 200 and "ORIGIN OK" in body
    assert "Test Origin Root" in verbose and "Kalkan Test School CA" not in verbose


def test_block_page_languages(proxy, accounts):
    titles = {"ky": "Бул барак бөгөттөлгөн", "ru": "Эта страница заблокирована", "en": "This page is blocked"}
    for header, lang in [("ru-RU,ru;q=0.9,en;q=0.5", "ru"), ("en-GB,en;q=0.8", "en"), ("de-DE", "ky")]:
        _, _, body, _ = curl(accounts["student"], proxy, "http://news.test/",
                             "-H", f"Accept-Language: {header}")
        assert f'<html lang="{lang}">' in body and titles[lang] in body, lang
        others = [t for k, t in titles.items() if k != lang]
        assert not any(t in body for t in others)


def test_bank_and_isuo_pass_through_with_origin_certificate(proxy, accounts, origin_ca_file):
    for host in ("bank.test", "emis.edu.gov.kg"):
        status, _, body, verbose = curl(accounts["teacher"], proxy, f"https://{host}/login",
                                        cacert=origin_ca_file)
        assert status == 200 and f"ORIGIN OK {host}" in body
        assert "Test Origin Root" in verbose and "Kalkan Test School CA" not in verbose
    started = proxy.wait_events("isuo.session")
    assert any(e["data"]["state"] == "start" and e["data"]["host"] == "emis.edu.gov.kg"
               and e["subject"]["os_user"] == TEACHER for e in started)
    ended = [e for e in proxy.wait_events("isuo.session", 2) if e["data"]["state"] == "end"]
    assert ended and ended[0]["data"]["ended_at"] is not None
    assert "login" not in json.dumps(started + ended)  # who and when, never what


def test_safe_search_forced_on_intercepted_search(proxy, accounts, origin, school_ca_file):
    status, headers, _, _ = curl(accounts["teacher"], proxy, "https://www.google.com/search?q=cats&safe=off",
                                 cacert=school_ca_file)
    assert status == 200
    echo = json.loads(headers["x-origin-echo"])
    assert "safe=active" in echo["path"] and "safe=off" not in echo["path"]


def test_report_page_and_report_event(proxy, accounts):
    student = accounts["student"]
    curl(student, proxy, "http://school.test/lesson-3", "-H", "Accept: text/html")
    status, _, body, _ = curl(student, proxy, "http://report.kalkan/", "-H", "Accept-Language: en")
    assert status == 200 and "Report a bad page" in body
    assert "http://school.test/lesson-3" in body  # the student's own recent page to pick
    status, _, body, _ = curl(student, proxy, "http://report.kalkan/send", "--data-urlencode",
                              "picked=http://school.test/lesson-3", "--data-urlencode", "comment=rude words",
                              "--data-urlencode", "lang=ru")
    assert status == 200 and "Спасибо" in body
    reports = proxy.wait_events("web.report")
    assert any(r["data"] == {"url": "http://school.test/lesson-3", "comment": "rude words"}
               and r["subject"]["os_user"] == STUDENT for r in reports)
    # the teacher does not see the student's pages
    _, _, body, _ = curl(accounts["teacher"], proxy, "http://report.kalkan/")
    assert "lesson-3" not in body


def test_report_without_url_is_refused_clearly(proxy, accounts):
    status, _, body, _ = curl(accounts["student"], proxy, "http://report.kalkan/send", "--data-urlencode",
                              "comment=x", "-H", "Accept-Language: en")
    assert status == 400 and "Pick a page or type its address." in body


def test_unblock_request_button(proxy, accounts):
    status, _, body, _ = curl(accounts["student"], proxy, "http://news.test/__kalkan__/unblock",
                              "--data-urlencode", "url=http://news.test/world", "--data-urlencode",
                              "rule=unsupervised.not_on_allow_list", "--data-urlencode", "comment=homework",
                              "--data-urlencode", "lang=en")
    assert status == 200 and 'id="unblock-sent"' in body
    requests = proxy.wait_events("web.unblock_request")
    assert any(r["data"]["url"] == "http://news.test/world" and r["data"]["comment"] == "homework"
               for r in requests)


def test_ban_applies_within_two_seconds(proxy, accounts):
    student = accounts["student"]
    assert curl(student, proxy, "http://school.test/")[0] == 200
    bundle = base_bundle()
    from datetime import UTC, datetime, timedelta

    from policy_server.protocol import Ban

    bundle.version = 2
    bundle.bans = [Ban(id="b1", seat="lab1-01", until=datetime.now(UTC) + timedelta(minutes=5), by="teacher")]
    proxy.write_policy(bundle)
    pushed = time.monotonic()
    while curl(student, proxy, "http://school.test/")[0] != 403:
        assert time.monotonic() - pushed < 2.0, "the ban did not apply within 2 s"
        time.sleep(0.05)
    proxy.write_policy(base_bundle())
    deadline = time.monotonic() + 2.0
    while curl(student, proxy, "http://school.test/")[0] != 200:
        assert time.monotonic() < deadline, "lifting the ban did not apply within 2 s"
        time.sleep(0.05)


def test_domain_fronting_is_decided_on_both_names(proxy, accounts, school_ca_file, origin_ca_file):
    """A CONNECT to one name with another name in the TLS SNI: the stricter of the two decides,
    so neither a blocked SNI behind an allowed CONNECT nor a blocked CONNECT behind an allowed
    SNI gets passed through untouched (the student gets the block page under the school CA)."""
    student = accounts["student"]
    # allowed name dialled, blocked name in the SNI and the Host header
    status, _, body, verbose = curl(student, proxy, "https://news.test/front", "--connect-to",
                                    "news.test:443:school.test:443", cacert=school_ca_file)
    assert "CONNECT school.test:443" in verbose
    assert status == 403 and 'id="kalkan-block"' in body and "Kalkan Test School CA" in verbose
    # blocked name dialled, allowed name in the SNI, the blocked one in the Host header
    status, _, body, verbose = curl(student, proxy, "https://school.test/front", "--connect-to",
                                    "school.test:443:news.test:443", "-H", "Host: news.test",
                                    cacert=school_ca_file)
    assert "CONNECT news.test:443" in verbose
    assert status == 403 and 'id="kalkan-block"' in body and "Kalkan Test School CA" in verbose
    # the same allowed name on both: passed through untouched (the control)
    status, _, body, verbose = curl(student, proxy, "https://school.test/front", cacert=origin_ca_file)
    assert status == 200 and "ORIGIN OK school.test" in body and "Test Origin Root" in verbose


def test_client_hello_in_pieces_is_decided_the_same(proxy, accounts, school_ca_file, origin_ca_file,
                                                    readable_dir):
    """When the first TLS bytes do not hold the whole ClientHello, the fast path (`next_layer`)
    leaves it to mitmproxy's TLS layer, and `tls_clienthello` decides the same way."""
    script = readable_dir / "split_hello_client.py"
    script.write_text((Path(__file__).parent / "split_hello_client.py").read_text())
    script.chmod(0o644)
    teacher, student = accounts["teacher"], accounts["student"]
    passed = teacher.run(["/usr/bin/python3", str(script), str(proxy.port), "bank.test", str(origin_ca_file)])
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.split("\n")[:2] == ["Test Origin Root", "HTTP/1.1 200 OK"]
    blocked = student.run(["/usr/bin/python3", str(script), str(proxy.port), "news.test",
                           str(school_ca_file)])
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout.split("\n")[:2] == ["Kalkan Test School CA", "HTTP/1.1 403 Forbidden"]


def test_passed_through_tls_relays_big_bodies_both_ways(proxy, accounts, origin_ca_file, readable_dir):
    """The cheap relay after a pass-through decision (agent/proxy/relay.py) under flow control:
    4 MiB down and 3 MiB up over a passed-through connection arrive intact."""
    import hashlib
    import subprocess

    from tests.support.proxy_rig import BIG

    upload = readable_dir / "up.bin"  # the teacher's curl reads it
    upload.write_bytes(bytes(reversed(range(256))) * (12 * 1024))
    upload.chmod(0o644)
    teacher = accounts["teacher"]
    cmd = ["setpriv", f"--reuid={teacher.uid}", f"--regid={teacher.gid}", "--clear-groups",
           "curl", "-sS", "--max-time", "60", "-x", proxy.url, "--cacert", str(origin_ca_file),
           "--data-binary", f"@{upload}", "https://bank.test/big"]
    result = subprocess.run(cmd, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr
    body = result.stdout
    assert len(body) == len(BIG) + 64 and body[:len(BIG)] == BIG
    assert body[len(BIG):].decode() == hashlib.sha256(upload.read_bytes()).hexdigest()
