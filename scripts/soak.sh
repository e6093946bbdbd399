#!/usr/bin/env bash
# Runs chosen packages (or the whole suite) several times in a row under a
# CPU hog, and prints at the end how many runs each test failed: a test
# that fails only under load asserts timing it should not. Needs root, as
# scripts/test.sh does (the kernel tests make network namespaces; nothing
# is programmed in the root namespace).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/soak.sh [-n RUNS] [-c CPUS] [-r REGEXP] [-t TIMEOUT] [-k] [PACKAGE...]

Runs `go test -json -count=1` of the packages (default ./..., the whole
suite) RUNS times in a row while `stress-ng --cpu CPUS` keeps the CPUs
busy, then prints the failures per test and per package. Exits 1 when any
run failed.

  -n RUNS     runs (default 3)
  -c CPUS     stress-ng CPU workers (default 2; 0 runs without a hog)
  -r REGEXP   only the tests matching REGEXP (go test -run)
  -t TIMEOUT  go test -timeout of each run (default 45m)
  -k          keep the JSON of every run (its directory is printed)
  -h          this help

Examples:
  scripts/soak.sh -n 3                                  # the whole suite 3 times
  scripts/soak.sh -n 20 -r 'TestWatchLeasesCoalesces$' ./subnet/
  scripts/soak.sh -n 5 ./test/ ./internal/lab/

stress-ng (Debian package stress-ng) is installed with apt-get if missing.
USAGE
}

runs=3 cpus=2 run_re="" timeout=45m keep=0
while getopts "n:c:r:t:kh" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    c) cpus=$OPTARG ;;
    r) run_re=$OPTARG ;;
    t) timeout=$OPTARG ;;
    k) keep=1 ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- ./...
case $runs in ''|*[!0-9]*|0) echo "soak: -n wants a positive number, not '$runs'" >&2; exit 2 ;; esac
case $cpus in ''|*[!0-9]*) echo "soak: -c wants a number, not '$cpus'" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/soak.sh needs root: the kernel tests create network namespaces" >&2
  exit 1
fi
scripts/deps.sh
if [ "$cpus" -gt 0 ] && ! command -v stress-ng >/dev/null; then
  echo "installing: stress-ng"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng >/dev/null
fi

out=$(mktemp -d /tmp/netagent-soak.XXXXXX)
hog=""
cleanup() {
  # stress-ng was started directly in the background: $hog is its own
  # PID, and it stops its workers on SIGTERM.
  if [ -n "$hog" ] && kill -0 "$hog" 2>/dev/null; then
    kill -TERM "$hog" 2>/dev/null || true
    wait "$hog" 2>/dev/null || true
  fi
  if [ "$keep" -eq 0 ]; then
    rm -rf "$out"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Build the summariser first, so that it does not compete with the runs.
go build -o "$out/soaksum" ./scripts/soaksum

if [ "$cpus" -gt 0 ]; then
  stress-ng --cpu "$cpus" --quiet &
  hog=$!
  echo "soak: stress-ng --cpu $cpus running (pid $hog)"
fi

args=(-json -count=1 -timeout "$timeout")
[ -z "$run_re" ] || args+=(-run "$run_re")
files=()
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  status=0
  go test "${args[@]}" "$@" >"$out/run-$i.json" 2>"$out/run-$i.stderr" || status=$?
  # go test prints build failures on stderr, outside the JSON.
  if [ -s "$out/run-$i.stderr" ]; then
    sed 's/^/  /' "$out/run-$i.stderr" | head -20
  fi
  echo "soak: run $i of $runs: exit $status in $(( $(date +%s) - start ))s, load $(cut -d' ' -f1-3 /proc/loadavg)"
  files+=("$out/run-$i.json")
done

echo
status=0
"$out/soaksum" "${files[@]}" || status=$?
[ "$keep" -eq 0 ] || echo "soak: the runs' JSON is in $out"
exit $status
