#!/usr/bin/env bash
# Runs netagent's whole test suite: unit tests, the kernel tests in network
# namespaces and the multi-host end-to-end tests. Needs root: the tests make
# (and remove) network namespaces; nothing is programmed in the root
# namespace. Extra arguments go to `go test` (e.g. -run TestVXLAN ./test/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh needs root: the kernel tests create network namespaces" >&2
  exit 1
fi
scripts/deps.sh
go vet ./...
if [ $# -eq 0 ]; then
  set -- ./...
fi
status=0
go test -timeout 45m -count=1 "$@" || status=$?
# With no arguments (the whole suite, as CI runs it) the fuzz targets then
# run for a bounded time each; the seed corpora ran with go test already.
if [ "$*" = "./..." ]; then
  fuzz_status=0
  scripts/fuzz.sh || fuzz_status=$?
  [ $status -ne 0 ] || status=$fuzz_status
fi
exit $status
