#!/usr/bin/env bash
# Installs the Debian packages that netagent's tests and lab use, when
# missing. Needs root (apt-get). With the argument "kube" it also builds
# the etcd and kube-apiserver that the Kubernetes tests run
# (scripts/kube-binaries.sh: ~10 minutes of 2 cores when cold, cached
# after), so that the build happens once, before the tests, and not inside
# a test's timeout.
set -euo pipefail
# lintian: test/package_test.go checks the .deb with it.
# util-linux: flock, for scripts/kube-binaries.sh.
pkgs=(iproute2 iptables nftables iputils-ping iperf3 ethtool procps systemd lintian util-linux)
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
if [ "${1:-}" = kube ]; then
  "$(dirname "$0")/kube-binaries.sh" >/dev/null
fi
