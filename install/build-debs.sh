#!/usr/bin/env bash
# Build the Debian packages of Kalkan with one command (docs/operations.md "Packages"):
#
#   bash install/build-debs.sh            # -> dist/kalkan-agent_<ver>_amd64.deb, dist/kalkan-server_<ver>_amd64.deb
#   KALKAN_VERSION=0.1.1 bash install/build-debs.sh
#
# Each package carries its own Python environment (agent: /opt/kalkan/venv, server:
# /opt/kalkan-server/venv) built once with Debian's /usr/bin/python3 from the exact versions
# in install/constraints.txt (pip: the configured package index or its cache; nothing else is
# fetched), its systemd unit and its maintainer scripts (install/deb/).  Needs dpkg-deb and
# fakeroot-free ownership: the tree is packed with --root-owner-group.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
version=${KALKAN_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
arch=$(dpkg --print-architecture)
python=/usr/bin/python3
pyver=$($python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
build=$repo/build/deb
dist=$repo/dist
rm -rf "$build"
mkdir -p "$build" "$dist"

# 1. one environment, built under a staging prefix, then moved to each package's prefix
stage=$build/venv
echo "building the Python environment (python $pyver, install/constraints.txt)"
$python -m venv "$stage"
"$stage/bin/pip" install -q --no-compile --disable-pip-version-check -c install/constraints.txt "$repo"
"$stage/bin/pip" uninstall -q -y pip setuptools wheel >/dev/null 2>&1 || true
find "$stage" -name '__pycache__' -prune -exec rm -rf {} +
rm -f "$stage"/bin/activate.csh "$stage"/bin/activate.fish "$stage"/bin/Activate.ps1

place_venv() {  # place_venv PKGROOT PREFIX: copy the environment to PKGROOT/PREFIX and relocate it
    local pkgroot=$1 prefix=$2
    mkdir -p "$pkgroot$(dirname "$prefix")"
    cp -a "$stage" "$pkgroot$prefix"
    # scripts' #! lines and activate name the staging path: point them at the real prefix
    grep -rlI --null "$stage" "$pkgroot$prefix/bin" | xargs -0 -r sed -i "s|$stage|$prefix|g"
    # byte-code compiled once here, with the installed paths in tracebacks
    $python -m compileall -q -j0 -s "$pkgroot" -p / "$pkgroot$prefix/lib" >/dev/null
}

control() {  # control PKG DEPENDS DESCRIPTION
    local pkg=$1 depends=$2 description=$3 root=$build/$1
    local size
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: Kalkan project <kalkan@localhost>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Homepage: https://kalkan.invalid/
Description: $description
CONTROL
}

# 2. kalkan-agent
a=$build/kalkan-agent
mkdir -p "$a/DEBIAN" "$a/usr/bin" "$a/lib/systemd/system" "$a/lib/systemd/system/clamav-daemon.service.d" \
    "$a/usr/share/kalkan-agent/clamav" "$a/usr/share/polkit-1/rules.d" "$a/usr/share/doc/kalkan-agent"
place_venv "$a" /opt/kalkan/venv
# the firewall template, where agent/proxy/nftables.py looks for it (next to the `agent` package;
# found missing by the clean-root test: the overlay test saw this machine's checkout)
install -D -m 0644 install/nftables/kalkan.nft.tmpl \
    "$a/opt/kalkan/venv/lib/python$pyver/site-packages/install/nftables/kalkan.nft.tmpl"
ln -s /opt/kalkan/venv/bin/kalkan-agent "$a/usr/bin/kalkan-agent"
sed -e 's|/opt/kalkan/.venv/bin/kalkan-agent|/opt/kalkan/venv/bin/kalkan-agent|' \
    -e 's|file:///opt/kalkan/docs/agent.md|file:///usr/share/doc/kalkan-agent/operations.md|' \
    install/systemd/kalkan-agent.service > "$a/lib/systemd/system/kalkan-agent.service"
install -m 0644 install/clamav/kalkan-clamd.conf "$a/lib/systemd/system/clamav-daemon.service.d/kalkan.conf"
install -m 0644 install/clamav/clamd.conf "$a/usr/share/kalkan-agent/clamav/clamd.conf"
install -m 0644 install/deb/agent/50-kalkan-networkmanager.rules "$a/usr/share/polkit-1/rules.d/"
[ -f docs/operations.md ] && install -m 0644 docs/operations.md "$a/usr/share/doc/kalkan-agent/"
for s in postinst prerm postrm; do install -m 0755 "install/deb/agent/$s" "$a/DEBIAN/$s"; done
control kalkan-agent "python$pyver, passwd, nftables, clamav-daemon, clamav-freshclam, libnss3-tools, libpcap0.8, ca-certificates" \
    "Kalkan workstation agent (school lab security and internet-use policy)
 The agent of a lab workstation: filtering proxy, firewall redirect, USB control,
 antivirus scans, idle locking; it reports to the school's Kalkan server."

# 3. kalkan-server
s=$build/kalkan-server
mkdir -p "$s/DEBIAN" "$s/usr/bin" "$s/lib/systemd/system" "$s/etc/default" "$s/usr/share/doc/kalkan-server"
place_venv "$s" /opt/kalkan-server/venv
ln -s /opt/kalkan-server/venv/bin/kalkan-server "$s/usr/bin/kalkan-server"
install -m 0644 install/deb/server/kalkan-server.service "$s/lib/systemd/system/"
install -m 0644 install/deb/server/default "$s/etc/default/kalkan-server"
echo /etc/default/kalkan-server > "$s/DEBIAN/conffiles"
[ -f docs/operations.md ] && install -m 0644 docs/operations.md "$s/usr/share/doc/kalkan-server/"
for x in postinst prerm postrm; do install -m 0755 "install/deb/server/$x" "$s/DEBIAN/$x"; done
control kalkan-server "python$pyver, passwd, openssl, gpg, dpkg" \
    "Kalkan policy server (school console, policy, events, reports)
 The school's server: web console for the responsible person, teachers, the director
 and the district; the agents' policy, events and incidents; backups and metrics."

# 4. pack (reproducible timestamps: the last commit's time); the agent first: the server
#    package carries it, so a school server serves its seats' install with nothing else
#    (GET /install/kalkan-agent.deb reads KALKAN_SEAT_PACKAGE_DIR, set in the unit)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
pack() {
    local pkg=$1 out=$dist/${1}_${version}_${arch}.deb
    rm -f "$out"
    dpkg-deb --root-owner-group -Zzstd -z6 --threads-max=2 --build "$build/$pkg" "$out" >/dev/null
    echo "$out ($(du -h "$out" | cut -f1))"
}
pack kalkan-agent
install -D -m 0644 "$dist/kalkan-agent_${version}_${arch}.deb" \
    "$s/usr/share/kalkan-server/seat-packages/kalkan-agent_${version}_${arch}.deb"
control kalkan-server "python$pyver, passwd, openssl, gpg, dpkg" \
    "Kalkan policy server (school console, policy, events, reports)
 The school's server: web console for the responsible person, teachers, the director
 and the district; the agents' policy, events and incidents; backups and metrics.
 It carries the kalkan-agent package and serves it to the school's lab PCs."
pack kalkan-server
