#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each (CI runs it
# from scripts/test.sh). The committed seed corpora under
# <package>/testdata/fuzz/ already run with every `go test`; this adds new
# random inputs. A failing input is written to testdata/fuzz/<Target>/ and
# fails the run: commit it once the bug is fixed, as a regression seed.
#
#   scripts/fuzz.sh                  # every target, FUZZTIME (10s) each
#   FUZZTIME=1m scripts/fuzz.sh ./subnet/
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
fuzztime="${FUZZTIME:-10s}"
if [ $# -eq 0 ]; then
  set -- ./...
fi

# `go test -fuzz` takes one target of one package per run. It runs in the
# background so that a TERM (scripts/test.sh stopping early) reaches the
# running go test by its PID.
child=""
trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null; exit 143' TERM INT
status=0
targets=0
for pkg in $(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}' "$@"); do
  rel="./${pkg#"$PWD"/}"
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$pkg"/*_test.go | sed 's/^func //' | sort -u); do
    targets=$((targets + 1))
    echo "--- fuzz $rel $target ($fuzztime)"
    corpus="$pkg/testdata/fuzz/$target"
    before=$(ls "$corpus" 2>/dev/null | sort || true)
    log=$(mktemp)
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 3s "$rel" >"$log" 2>&1 &
    child=$!
    if ! wait "$child"; then
      cat "$log"
      after=$(ls "$corpus" 2>/dev/null | sort || true)
      # Go 1.26's fuzzing coordinator can report the end of -fuzztime
      # itself as a failure ("context deadline exceeded", no input
      # written) when a worker is starved at that moment (golang/go#75804,
      # fixed in Go 1.27). A run that wrote no failing input and failed
      # only that way found nothing.
      if [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$log" &&
        [ "$(grep -c '^--- FAIL' "$log")" -eq 1 ]; then
        echo "fuzz $rel $target: the fuzzing time ended during a worker's run (golang/go#75804); no failing input" >&2
      else
        echo "FAIL fuzz $rel $target" >&2
        status=1
      fi
    else
      cat "$log"
    fi
    rm -f "$log"
    child=""
  done
done
echo "fuzz: $targets targets, $fuzztime each: $([ $status -eq 0 ] && echo ok || echo FAIL)"
exit $status
