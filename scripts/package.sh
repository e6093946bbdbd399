#!/usr/bin/env bash
# Builds netagent's .deb and .rpm from this tree into out/ (or $1):
#
#   scripts/package.sh [OUTDIR]
#
# The version comes from `git describe` (tags vX.Y.Z): X.Y.Z on a tag,
# X.Y.Z+git<N>.<commit> N commits after it, 0.0.0+git<N>.<commit> with no
# tag; ".dirty" is appended for a tree with uncommitted changes. The same
# version goes into the binaries (`netagent version`). nfpm is the one
# pinned in tools/go.mod. GOARCH selects the architecture (default: Go's).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
out=$(realpath -m "${1:-out}")

pkg_version() {
  local commit count tag dirty=""
  commit=$(git rev-parse --short=12 HEAD)
  git diff --quiet HEAD -- 2>/dev/null || dirty=".dirty"
  if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
    count=$(git rev-list --count "$tag"..HEAD)
    if [ "$count" -eq 0 ]; then
      echo "${tag#v}${dirty}"
    else
      echo "${tag#v}+git${count}.${commit}${dirty}"
    fi
  else
    echo "0.0.0+git$(git rev-list --count HEAD).${commit}${dirty}"
  fi
}

export NETAGENT_VERSION=${NETAGENT_VERSION:-$(pkg_version)}
goarch=${GOARCH:-$(go env GOARCH)}
export NFPM_ARCH=$goarch
# dist/nfpm.yaml takes the binaries and the changelog from out/build
# (nfpm does not expand variables in source paths).
build=$PWD/out/build
rm -rf "$build"
mkdir -p "$build"

# Static (no cgo) position-independent executables: PIE for ASLR, as
# Debian builds its binaries (lintian takes a static non-PIE binary for a
# mistake). grpcnotrace leaves out gRPC's request tracing (never enabled
# by the agent), whose html/template keeps every exported method in the
# binary: 4 MB less to map and ~15 % less CPU from exec to main
# (bench/README.md, "Agent memory and start").
commit=$(git rev-parse HEAD)
ldflags="-s -w -X main.version=${NETAGENT_VERSION} -X main.commit=${commit}"
#
# Two builds of the agent: netagent without the Kubernetes store
# (netagent_nokube: hosts on etcd carry none of the Kubernetes client,
# ~6 MiB of RSS and ~8 MB of binary), and netagent-kube with it, which
# netagent runs in its place for --kube-subnet-mgr.
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -tags grpcnotrace,netagent_nokube -trimpath -buildmode=pie -ldflags "$ldflags" -o "$build/netagent" ./cmd/netagent
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -tags grpcnotrace -trimpath -buildmode=pie -ldflags "$ldflags" -o "$build/netagent-kube" ./cmd/netagent
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -buildmode=pie -ldflags "-s -w" -o "$build/netagent-cni" ./cni-plugin/netagent-cni

# The Debian changelog of a native package: one entry for this build,
# dated by the commit (reproducible).
maintainer=$(sed -n 's/^maintainer: //p' dist/nfpm.yaml)
{
  echo "netagent (${NETAGENT_VERSION}) unstable; urgency=medium"
  echo
  echo "  * Built from commit ${commit}."
  echo
  echo " -- ${maintainer}  $(LC_ALL=C date -u -R -d "@$(git log -1 --format=%ct)")"
} | gzip -9n > "$build/changelog.gz"

nfpm=$(go -C tools tool -n nfpm)
mkdir -p "$out"
for packager in deb rpm; do
  "$nfpm" package --config dist/nfpm.yaml --packager "$packager" --target "$out/" >&2
done
ls -1 "$out"/netagent[_-]"${NETAGENT_VERSION}"*.{deb,rpm}
