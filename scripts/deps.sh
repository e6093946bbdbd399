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
# docker.io (dockerd, containerd, runc), podman (with conmon and its CNI
# backend; the plugins it runs are the ones the tests build, so Debian's
# containernetworking-plugins is not needed), runc and crun (podman's OCI
# runtimes: the lab uses runc, which also works with hybrid cgroups) and
# busybox-static (the only program of the containers' image: no registry
# is reachable): test/docker_test.go, test/podman_test.go and
# `netagent-lab up --runtime`.
# wireguard-tools, tcpdump: test/wireguard_test.go (wg show, the underlay capture);
# wireguard-go: the benchmark against Debian's userspace WireGuard.
pkgs=(iproute2 iptables nftables iputils-ping iperf3 ethtool procps systemd lintian
  util-linux docker.io podman crun runc busybox-static wireguard-tools tcpdump wireguard-go)
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
if [ "${1:-}" = kube ]; then
  "$(dirname "$0")/kube-binaries.sh" >/dev/null
fi
