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
# The whole suite (as CI runs it) builds the Kubernetes test binaries
# first; a run of chosen packages leaves that to the tests that need them.
if [ $# -eq 0 ]; then
  scripts/deps.sh kube
else
  scripts/deps.sh
fi
go vet ./...
if [ $# -eq 0 ]; then
  set -- ./...
fi

# With no arguments (the whole suite, as CI runs it) the fuzz targets also
# run for a bounded time each (the seed corpora run with go test already).
# They run alongside the tests: the end-to-end tests spend most of their
# time waiting for TTLs and outages, and the suite asserts no timing, so
# the extra load costs correctness nothing and saves the fuzzing's wall
# time. Their output is printed after the tests'.
fuzz_pid="" fuzz_log=""
cleanup() {
  if [ -n "$fuzz_pid" ] && kill -0 "$fuzz_pid" 2>/dev/null; then
    kill -TERM "$fuzz_pid" 2>/dev/null || true
    wait "$fuzz_pid" 2>/dev/null || true
  fi
  [ -z "$fuzz_log" ] || rm -f "$fuzz_log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "$*" = "./..." ]; then
  fuzz_log=$(mktemp /tmp/netagent-fuzz.XXXXXX)
  scripts/fuzz.sh >"$fuzz_log" 2>&1 &
  fuzz_pid=$!
fi

status=0
go test -timeout 45m -count=1 "$@" || status=$?
if [ -n "$fuzz_pid" ]; then
  fuzz_status=0
  wait "$fuzz_pid" || fuzz_status=$?
  fuzz_pid=""
  cat "$fuzz_log"
  [ $status -ne 0 ] || status=$fuzz_status
fi
exit $status
