"""CA installation against temp roots with the real tools (update-ca-certificates,
certutil), and the nftables ruleset checked by the real `nft -c`."""

from __future__ import annotations

import json
import subprocess

import pytest

from agent.platform.firewall import FakeFirewall, FirewallError, LinuxFirewall
from agent.proxy import ca
from agent.proxy.nftables import FirewallConfig, render_ruleset
from tests.support.proxy_rig import make_ca, make_leaf


@pytest.fixture(scope="module")
def school():
    return make_ca("Kalkan CA test")


def test_system_store(tmp_path, school):
    # a distribution root already there, as on a real system
    other = make_ca("Distribution root")
    (tmp_path / "usr/share/ca-certificates/dist").mkdir(parents=True)
    (tmp_path / "usr/share/ca-certificates/dist/root.crt").write_text(other.cert_pem)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/ca-certificates.conf").write_text("dist/root.crt\n")
    ours, theirs = school.cert_pem.splitlines()[1], other.cert_pem.splitlines()[1]
    path = ca.install_system_ca(school.cert_pem, tmp_path)
    bundle = tmp_path / "etc/ssl/certs/ca-certificates.crt"
    assert path.exists() and ours in bundle.read_text() and theirs in bundle.read_text()
    assert ca.remove_system_ca(tmp_path)
    assert ours not in bundle.read_text() and theirs in bundle.read_text()
    assert not ca.remove_system_ca(tmp_path)


def test_firefox_policy_merges(tmp_path, school):
    policy = tmp_path / "etc/firefox/policies/policies.json"
    policy.parent.mkdir(parents=True)
    policy.write_text(json.dumps({"policies": {"DisableTelemetry": True}}))
    ca.install_firefox_policy(school.cert_pem, tmp_path)
    ca.install_firefox_policy(school.cert_pem, tmp_path)  # twice: still one entry
    doc = json.loads(policy.read_text())
    assert doc["policies"]["DisableTelemetry"] is True
    assert doc["policies"]["Certificates"]["Install"] == ["/etc/firefox/policies/kalkan-school-ca.pem"]
    assert ca.remove_firefox_policy(tmp_path)
    assert json.loads(policy.read_text()) == {"policies": {"DisableTelemetry": True}}


def test_firefox_policy_bad_json(tmp_path, school):
    policy = tmp_path / "etc/firefox/policies/policies.json"
    policy.parent.mkdir(parents=True)
    policy.write_text("{oops")
    with pytest.raises(ca.CaError, match="not valid JSON"):
        ca.install_firefox_policy(school.cert_pem, tmp_path)


def test_nss_db(tmp_path, school):
    db = tmp_path / "home/ali/.pki/nssdb"
    ca.install_nss(school.cert_pem, db)
    assert ca.nss_trusts(db)
    listing = subprocess.run(["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True).stdout
    assert ca.NSS_NICKNAME in listing and "C,," in listing
    assert ca.remove_nss(db) and not ca.nss_trusts(db)


def test_bad_ca_is_refused(tmp_path, school):
    leaf = make_leaf(school, ["x.test"])
    with pytest.raises(ca.CaError, match="not a CA"):
        ca.install_system_ca(leaf.cert_pem, tmp_path)
    with pytest.raises(ca.CaError, match="not a PEM"):
        ca.check_ca("garbage")
    other = make_ca("other")
    with pytest.raises(ca.CaError, match="does not belong"):
        ca.write_proxy_ca(tmp_path / "conf", school.cert_pem, other.key_pem)
    assert not (tmp_path / "conf").exists()  # nothing half-stored


def test_proxy_ca_file(tmp_path, school):
    target = ca.write_proxy_ca(tmp_path / "conf", school.cert_pem, school.key_pem)
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    text = target.read_text()
    assert text.index("PRIVATE KEY") < text.index("CERTIFICATE")


@pytest.mark.root
@pytest.mark.parametrize("resolvers", [(), ("10.0.0.53",), ("10.0.0.53", "fd00::53"), ("fd00::53",)])
def test_ruleset_passes_nft_check(resolvers):
    LinuxFirewall().check(render_ruleset(FirewallConfig(proxy_uid=999, dns_resolvers=resolvers)))


@pytest.mark.root
def test_nft_check_reports_errors():
    with pytest.raises(FirewallError, match="nft rejected"):
        LinuxFirewall().check("table inet kalkan { chain x { type nat hook nowhere priority 0; } }")


def test_fake_firewall():
    fw = FakeFirewall()
    with pytest.raises(FirewallError):
        fw.install("table inet other {}")
    fw.install(render_ruleset(FirewallConfig(proxy_uid=5)))
    assert fw.installed() and fw.remove() and not fw.installed()
