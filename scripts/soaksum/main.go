// Command soaksum reads the `go test -json` output of repeated runs of the
// same tests (one file per run) and prints, per test, how many runs it
// failed; scripts/soak.sh runs it at the end of a soak.
//
//	go run ./scripts/soaksum run-1.json run-2.json ...
//
// It exits 1 when any test, or any package outside a test (a build
// failure, a panic, a timeout), failed in any run.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is the part of a test2json event soaksum reads.
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
}

// result is one test's (or, with an empty test name, one package's)
// record over all runs.
type result struct {
	pkg, test    string
	pass, fail   int
	skip         int
	failedRuns   []int
	worstElapsed float64
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "soaksum:", err)
		os.Exit(1)
	}
}

var errFailures = errors.New("some tests failed")

func run(files []string, out io.Writer) error {
	if len(files) == 0 {
		return errors.New("usage: soaksum RUN.json...")
	}
	results := map[[2]string]*result{}
	for i, f := range files {
		if err := read(f, i+1, results); err != nil {
			return err
		}
	}
	failed := summarise(results, len(files), out)
	if failed {
		return errFailures
	}
	return nil
}

// read adds the events of the run n in file to results.
func read(file string, n int, results map[[2]string]*result) error {
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // a build error printed by go test itself
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			continue
		}
		switch ev.Action {
		case "pass", "fail", "skip":
		default:
			continue
		}
		k := [2]string{ev.Package, ev.Test}
		r := results[k]
		if r == nil {
			r = &result{pkg: ev.Package, test: ev.Test}
			results[k] = r
		}
		switch ev.Action {
		case "pass":
			r.pass++
		case "fail":
			r.fail++
			r.failedRuns = append(r.failedRuns, n)
		case "skip":
			r.skip++
		}
		r.worstElapsed = max(r.worstElapsed, ev.Elapsed)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// summarise prints the failures per test, then per package, and returns
// whether there were any.
func summarise(results map[[2]string]*result, runs int, out io.Writer) bool {
	var tests, pkgs []*result
	var passedTests int
	for _, r := range results {
		switch {
		case r.test == "":
			pkgs = append(pkgs, r)
		case r.fail > 0:
			tests = append(tests, r)
		default:
			passedTests++
		}
	}
	sort.Slice(tests, func(i, j int) bool {
		if tests[i].fail != tests[j].fail {
			return tests[i].fail > tests[j].fail
		}
		return tests[i].pkg+" "+tests[i].test < tests[j].pkg+" "+tests[j].test
	})
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].pkg < pkgs[j].pkg })

	fmt.Fprintf(out, "%d runs; %d tests never failed\n", runs, passedTests)
	if len(tests) > 0 {
		fmt.Fprintln(out, "\nfailed tests (failed runs / runs it ran in, worst time):")
		for _, r := range tests {
			fmt.Fprintf(out, "  %3d/%-3d %s %s  (runs %s; %.1fs)\n", r.fail, r.fail+r.pass+r.skip,
				short(r.pkg), r.test, runList(r.failedRuns), r.worstElapsed)
		}
	}
	failed := len(tests) > 0
	fmt.Fprintln(out, "\npackages (failed runs / runs, worst time):")
	for _, r := range pkgs {
		mark := "ok  "
		if r.fail > 0 {
			mark, failed = "FAIL", true
		}
		fmt.Fprintf(out, "  %s %3d/%-3d %s  (%.1fs)\n", mark, r.fail, r.fail+r.pass+r.skip, short(r.pkg), r.worstElapsed)
	}
	return failed
}

func short(pkg string) string { return strings.TrimPrefix(pkg, "github.com/netagent/netagent/") }

func runList(runs []int) string {
	s := make([]string, len(runs))
	for i, n := range runs {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}
