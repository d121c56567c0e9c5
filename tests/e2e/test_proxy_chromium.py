"""Real headless Chromium, run as the real student and teacher accounts, through the
real proxy: the block page in ky/ru/en (screenshots kept in test-artifacts/), the
school CA trusted through the user's NSS database (agent.proxy.ca.install_nss)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.proxy.ca import install_nss
from tests.proxy.conftest import (  # noqa: F401 - fixtures
    accounts,
    base_bundle,
    origin,
    origin_ca_file,
    pki,
    readable_dir,
    school_ca_file,
    upstream_for,
)
from tests.support.proxy_rig import start_proxy

pytestmark = [pytest.mark.root, pytest.mark.e2e]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, origin, origin_ca_file):  # noqa: F811
    state = tmp_path_factory.mktemp("chromium-proxy")
    process = start_proxy(state, school_ca=pki["school"], upstream=upstream_for(origin), bundle=base_bundle(),
                          upstream_ca=origin_ca_file)
    yield process
    process.stop()


def browser_home(account, readable_dir, pki, origin) -> Path:  # noqa: F811
    home = readable_dir / f"home-{account.name}"
    if not home.exists():
        home.mkdir()
        install_nss(pki["school"].cert_pem, home / ".pki/nssdb")
        # the origins' own root too, so pass-through pages validate as they would on the internet
        subprocess.run(["certutil", "-A", "-d", f"sql:{home / '.pki/nssdb'}", "-n", "test origin root",
                        "-t", "C,,", "-i", str(readable_dir / "origin-ca.pem")], check=True)
        for path in [home, *home.rglob("*")]:
            os.chown(path, account.uid, account.gid)
    return home


def chromium(account, home: Path, proxy, url: str, *, lang: str, action: list[str]) -> str:
    profile = home / f"profile-{lang}"
    result = account.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--proxy-server={proxy.url}", f"--accept-lang={lang}",
         "--window-size=1000,760", "--timeout=15000", *action, url],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    return result.stdout + result.stderr


@pytest.mark.parametrize(("lang", "title"), [("ky", "Бул барак бөгөттөлгөн"),
                                             ("ru", "Эта страница заблокирована"),
                                             ("en", "This page is blocked")])
def test_block_page_in_chromium(lang, title, proxy, accounts, readable_dir, pki, origin,  # noqa: F811
                                origin_ca_file, artifacts_dir):  # noqa: F811
    student = accounts["student"]
    home = browser_home(student, readable_dir, pki, origin)
    dom = chromium(student, home, proxy, "https://news.test/world", lang=lang, action=["--dump-dom"])
    assert 'id="kalkan-block"' in dom and title in dom, dom[-2000:]
    shot = home / f"block-{lang}.png"
    chromium(student, home, proxy, "https://news.test/world", lang=lang, action=[f"--screenshot={shot}"])
    assert shot.exists() and shot.stat().st_size > 5000
    shutil.copy(shot, artifacts_dir / f"proxy-block-page-{lang}.png")


def test_teacher_sees_the_page_and_isuo_keeps_its_certificate(proxy, accounts, readable_dir, pki,  # noqa: F811
                                                              origin, origin_ca_file):  # noqa: F811
    teacher = accounts["teacher"]
    home = browser_home(teacher, readable_dir, pki, origin)
    dom = chromium(teacher, home, proxy, "https://news.test/world", lang="en", action=["--dump-dom"])
    assert "ORIGIN OK news.test" in dom
    dom = chromium(teacher, home, proxy, "https://emis.edu.gov.kg/", lang="en", action=["--dump-dom"])
    assert "ORIGIN OK emis.edu.gov.kg" in dom
    assert proxy.wait_events("isuo.session")
