"""Fixtures of the proxy tests: real OS users, real origin servers, a real mitmdump."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from policy_server.protocol import FilteringSection, Group, GroupKind, PolicyBundle
from tests.support.proxy_rig import make_ca, start_origin, start_proxy

STUDENT, TEACHER = "kalkan-t-stu", "kalkan-t-tch"
FAKE_HOSTS = ["news.test", "school.test", "bank.test", "emis.edu.gov.kg", "www.google.com", "bad.test"]


@dataclass(frozen=True)
class OsAccount:
    name: str
    uid: int
    gid: int

    def run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command as this user (real uid, so the proxy sees them as the socket owner)."""
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                               *args], capture_output=True, text=True, timeout=60, **kwargs)


def _account(name: str) -> OsAccount:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
        entry = pwd.getpwnam(name)
    return OsAccount(name, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def accounts() -> dict[str, OsAccount]:
    if os.geteuid() != 0:
        pytest.fail("the proxy tests run curl as real student/teacher accounts: run them as root")
    return {"student": _account(STUDENT), "teacher": _account(TEACHER)}


def base_bundle(**filtering) -> PolicyBundle:
    return PolicyBundle(
        version=1,
        school="Test school",
        groups=[Group(name="student", kind=GroupKind.student, os_users=[STUDENT]),
                Group(name="teacher", kind=GroupKind.teacher, os_users=[TEACHER])],
        filtering=FilteringSection(allow_list=["school.test", "bank.test"], block_list=["bad.test"],
                                   passthrough_hosts=["bank.test"], **filtering),
    )


@pytest.fixture(scope="session")
def pki():
    return {"school": make_ca("Kalkan Test School CA")}


@pytest.fixture(scope="session")
def origin(tmp_path_factory):
    server = start_origin(FAKE_HOSTS, tmp_path_factory.mktemp("origin"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def readable_dir():
    """A temp folder the test accounts can read (pytest's own is root-only)."""
    folder = Path(tempfile.mkdtemp(prefix="kalkan-proxy-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def origin_ca_file(origin, readable_dir) -> Path:
    path = readable_dir / "origin-ca.pem"
    path.write_text(origin.ca.cert_pem)
    return path


@pytest.fixture(scope="session")
def school_ca_file(pki, readable_dir) -> Path:
    path = readable_dir / "school-ca.pem"
    path.write_text(pki["school"].cert_pem)
    return path


def upstream_for(origin) -> dict[str, tuple[str, int]]:
    mapping = {}
    for host in FAKE_HOSTS:
        mapping[f"{host}:80"] = ("127.0.0.1", origin.http_port)
        mapping[f"{host}:443"] = ("127.0.0.1", origin.https_port)
    return mapping


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, origin, origin_ca_file, accounts):
    state = tmp_path_factory.mktemp("proxy-state")
    process = start_proxy(state, school_ca=pki["school"], upstream=upstream_for(origin), bundle=base_bundle(),
                          upstream_ca=origin_ca_file, extra=["--set", "kalkan_isuo_idle_s=1"])
    yield process
    process.stop()
