#!/usr/bin/env bash
# Installs the Debian packages that netagent's tests and lab use, when
# missing. Needs root (apt-get).
set -euo pipefail
# lintian: test/package_test.go checks the .deb with it.
# docker.io (dockerd, containerd, runc), podman (with conmon and its CNI
# backend), crun, containernetworking-plugins (the reference plugins
# podman's CNI backend expects on a host) and busybox-static (the only
# program of the containers' image: no registry is reachable):
# test/docker_test.go, test/podman_test.go and `netagent-lab up --runtime`.
pkgs=(iproute2 iptables nftables iputils-ping iperf3 ethtool procps systemd lintian
  util-linux docker.io podman crun runc containernetworking-plugins busybox-static)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  # No package may start its service here: docker.io's would run dockerd
  # in the machine's own network namespace (docker0, iptables rules). The
  # tests start the daemons they need inside lab namespaces.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "go is not on PATH (expected /usr/local/go/bin)" >&2; exit 1; }
