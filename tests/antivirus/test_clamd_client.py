"""The clamd client against a real clamd started with Kalkan's test signatures."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from agent.antivirus.clamd import ClamdClient, ClamdUnavailable, ClamdVersion, ScanReply
from tests.support.clamd import EICAR, TESTFILES


def test_version_parse_with_and_without_database():
    full = ClamdVersion.parse("ClamAV 1.4.6/27400/Fri Jan  2 03:04:00 2026")
    assert full.engine == "1.4.6" and full.signature_version == "27400"
    assert full.signature_date is not None and full.signature_date.tzinfo is not None
    bare = ClamdVersion.parse("ClamAV 1.4.6")
    assert bare.signature_version is None and bare.signature_date is None


def test_reply_parse():
    found = ScanReply.parse("3: fd[12]: Kalkan.Test.Eicar FOUND")
    assert (found.request_id, found.signature, found.error) == (3, "Kalkan.Test.Eicar", None)
    ok = ScanReply.parse("/tmp/x: OK")
    assert ok.request_id is None and not ok.infected and ok.error is None
    error = ScanReply.parse("1: fd[9]: Can't read file ERROR")
    assert error.error == "Can't read file"


def test_real_clamd_reports_signature_version_and_date(clamd):
    version = ClamdClient(clamd.socket_path).version()
    assert version.signature_version == "424242"
    age = datetime.now(UTC) - version.signature_date
    assert 0.9 < age.total_seconds() / 86400 < 1.1


def test_instream_and_fildes_find_eicar(clamd, tmp_path):
    client = ClamdClient(clamd.socket_path)
    assert client.ping()
    assert client.instream(EICAR).signature == "Kalkan.Test.Eicar"
    assert not client.instream(b"hello, clean world\n").infected
    # a root-only file: FILDES passes the agent's descriptor, clamd needs no read access
    secret = tmp_path / "secret.bin"
    secret.write_bytes(EICAR)
    secret.chmod(0o600)
    assert client.scan_path(secret).signature == "Kalkan.Test.Eicar"


SAMPLES = ["clam.exe", "clam.zip", "clam-upx.exe", "clam.7z", "clam.pdf", "clam.cab"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_clamav_testfiles_are_detected(clamd, sample):
    reply = ClamdClient(clamd.socket_path).scan_path(TESTFILES / sample)
    assert reply.signature in {"Kalkan.Test.ClamBody", "Kalkan.Test.ClamExe"}


def test_session_pipelines_many_requests(clamd, tmp_path):
    paths = []
    for i in range(30):
        path = tmp_path / f"f{i}"
        path.write_bytes(EICAR if i % 10 == 0 else b"clean %d" % i)
        paths.append(path)
    session = ClamdClient(clamd.socket_path).session()
    ids = {}
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        ids[session.send_fd(fd)] = path
        os.close(fd)
    replies = []
    while session.in_flight:
        replies.extend(session.read_replies())
    session.close()
    infected = sorted(ids[r.request_id].name for r in replies if r.infected)
    assert len(replies) == 30 and infected == ["f0", "f10", "f20"]


def test_missing_clamd_says_what_to_do(tmp_path):
    with pytest.raises(ClamdUnavailable) as info:
        ClamdClient(tmp_path / "nope.sock").version()
    assert "apt-get install clamav-daemon" in str(info.value)
