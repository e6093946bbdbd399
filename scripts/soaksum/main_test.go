package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunCountsFailuresPerTest(t *testing.T) {
	dir := t.TempDir()
	runs := []string{
		`{"Action":"run","Package":"m/a","Test":"TestX"}
{"Action":"fail","Package":"m/a","Test":"TestX","Elapsed":1.5}
{"Action":"pass","Package":"m/a","Test":"TestY","Elapsed":0.1}
{"Action":"fail","Package":"m/a","Elapsed":2}
`,
		`# m/b
build failed
{"Action":"pass","Package":"m/a","Test":"TestX","Elapsed":0.5}
{"Action":"pass","Package":"m/a","Test":"TestY","Elapsed":0.1}
{"Action":"pass","Package":"m/a","Elapsed":1}
{"Action":"fail","Package":"m/b","Elapsed":0}
`,
	}
	var files []string
	for i, r := range runs {
		f := filepath.Join(dir, "run-"+string(rune('1'+i))+".json")
		if err := os.WriteFile(f, []byte(r), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	var out strings.Builder
	err := run(files, &out)
	if !errors.Is(err, errFailures) {
		t.Errorf("run = %v, want errFailures", err)
	}
	for _, want := range []string{
		"2 runs; 1 tests never failed",
		"1/2   m/a TestX  (runs 1; 1.5s)",
		"FAIL   1/2   m/a",
		"FAIL   1/1   m/b",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "TestY") {
		t.Errorf("summary names a test that never failed:\n%s", out.String())
	}
}

func TestRunAllPassed(t *testing.T) {
	f := filepath.Join(t.TempDir(), "run.json")
	if err := os.WriteFile(f, []byte(`{"Action":"pass","Package":"m/a","Test":"TestX"}
{"Action":"pass","Package":"m/a"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := run([]string{f}, &out); err != nil {
		t.Errorf("run = %v, want nil:\n%s", err, out.String())
	}
}
