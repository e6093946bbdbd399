#!/usr/bin/env bash
# Installs the Debian packages that netagent's tests and lab use, when
# missing. Needs root (apt-get).
set -euo pipefail
# lintian: test/package_test.go checks the .deb with it.
# wireguard-tools, tcpdump: test/wireguard_test.go (wg show, the underlay capture);
# wireguard-go: the benchmark against Debian's userspace WireGuard.
pkgs=(iproute2 iptables nftables iputils-ping iperf3 ethtool procps systemd lintian wireguard-tools tcpdump wireguard-go)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "go is not on PATH (expected /usr/local/go/bin)" >&2; exit 1; }
