#!/usr/bin/env bash
# Builds the binaries that the Kubernetes tests run (etcd, kube-apiserver
# and, when asked for, kube-controller-manager) from the nested modules
# tools/etcd and tools/kube, once, into cache directories keyed by each
# module's go.mod/go.sum and the Go version. Later calls (every test package,
# every run) find the binaries there and return at once; concurrent calls
# wait on a lock. It prints each binary's path, one a line, in the order
# asked. A cold kube-apiserver takes ~10 minutes of 2 cores and
# ~3 GB of memory; etcd ~1.5 minutes.
#
# Usage: scripts/kube-binaries.sh [BINARY...]
#   BINARY is etcd, kube-apiserver or kube-controller-manager (default:
#   etcd kube-apiserver).
#
# NETAGENT_KUBE_CACHE overrides the cache directory (default
# $XDG_CACHE_HOME/netagent or ~/.cache/netagent).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$PATH:/usr/local/go/bin"
cache="${NETAGENT_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netagent}"
[ $# -gt 0 ] || set -- etcd kube-apiserver

# modversion MODDIR MODULE prints the version of MODULE that MODDIR's go.mod
# requires.
modversion() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2 } $1 == "require" && $2 == m { print $3 }' "$1/go.mod"
}

# build NAME prints the path of binary NAME, building it first if its
# cache directory lacks it.
build() {
  local name=$1 mod pkg module
  case $name in
    etcd) mod=$root/tools/etcd module=go.etcd.io/etcd/server/v3 pkg=$module ;;
    kube-apiserver | kube-controller-manager)
      mod=$root/tools/kube module=k8s.io/kubernetes pkg=k8s.io/kubernetes/cmd/$name ;;
    *) echo "kube-binaries: unknown binary $name" >&2; return 1 ;;
  esac
  local version key dir
  version=$(modversion "$mod" "$module")
  [ -n "$version" ] || { echo "kube-binaries: no $module version in $mod/go.mod" >&2; return 1; }
  key=$( (cat "$mod/go.mod" "$mod/go.sum"; go env GOVERSION GOARCH) | sha256sum | cut -c1-12)
  dir=$cache/$(basename "$mod")-$version-$key
  if [ ! -x "$dir/$name" ]; then
    mkdir -p "$dir"
    (
      flock 9
      if [ ! -x "$dir/$name" ]; then
        start=$(date +%s)
        (cd "$mod" && go build -trimpath -ldflags='-s -w' -o "$dir/$name.tmp" "$pkg")
        mv "$dir/$name.tmp" "$dir/$name"
        echo "kube-binaries: built $name $version in $(($(date +%s) - start))s" >&2
      fi
    ) 9>"$dir/.lock"
  fi
  echo "$dir/$name"
}

for name in "$@"; do
  build "$name"
done
