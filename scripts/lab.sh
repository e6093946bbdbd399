#!/usr/bin/env bash
# Brings up a local netagent lab: an embedded etcd, N hosts running netagent
# and containers attached through netagent-cni, all in network namespaces,
# then prints every agent's status and a container ping matrix. Needs root.
# Nothing is programmed in the machine's own network namespace.
#
#   scripts/lab.sh                       3 hosts, vxlan; stays up until Ctrl-C
#   scripts/lab.sh --backend host-gw --hosts 4
#   scripts/lab.sh --ipv6 dual           dual stack: a ping matrix per family (--ipv6 only: IPv6 alone)
#   scripts/lab.sh --once                up, print, down; status 0 if every ping passed
#   scripts/lab.sh --detach              up in the background; bin/netagent-lab down ends it
#
# Arguments go to `netagent-lab up` (bin/netagent-lab up -h lists them).
# Binaries are built into $NETAGENT_LAB_BIN (default: bin/ in the tree).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/lab.sh needs root: the lab creates network namespaces" >&2
  exit 1
fi
scripts/deps.sh
bin="${NETAGENT_LAB_BIN:-bin}"
mkdir -p "$bin"
bin="$(cd "$bin" && pwd)"
echo "building into $bin ..."
go build -o "$bin/" ./cmd/netagent ./cmd/netagent-lab
go build -o "$bin/" ./cni-plugin/netagent-cni
go build -o "$bin/" \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/meta/portmap
# netagent-lab removes everything it makes when it exits (Ctrl-C, SIGTERM,
# `netagent-lab down`), so no trap is needed here: exec hands it the
# signals directly.
exec "$bin/netagent-lab" up --bin-dir "$bin" "$@"
