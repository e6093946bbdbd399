package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, tt := range []struct {
		name     string
		existing bool
		perm     os.FileMode
	}{
		{"new file 0644 under umask 077", false, 0o644},
		{"replaces a file", true, 0o644},
		{"private file", false, 0o600},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if tt.existing {
				if err := os.WriteFile(path, []byte("old contents, longer than the new"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(path, []byte("new\n"), tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != "new\n" {
				t.Fatalf("contents %q, %v; want %q", got, err, "new\n")
			}
			st, err := os.Stat(path)
			if err != nil || st.Mode().Perm() != tt.perm {
				t.Errorf("mode %v, %v; want %v", st.Mode().Perm(), err, tt.perm)
			}
			assertOnly(t, dir, "f")
		})
	}
}

func TestWriteFileMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	if err := WriteFile(path, []byte("x"), 0o644); !os.IsNotExist(err) {
		t.Fatalf("err = %v, want not exist", err)
	}
}

func TestWriteInStaysInRoot(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(filepath.Join(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteIn(root, "sub/f", []byte("in"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "sub", "f")); err != nil || !bytes.Equal(got, []byte("in")) {
		t.Fatalf("sub/f = %q, %v", got, err)
	}
	assertOnly(t, filepath.Join(dir, "sub"), "f")
	for _, name := range []string{"../escape", "/etc/escape"} {
		if err := WriteIn(root, name, []byte("out"), 0o600); err == nil {
			t.Errorf("WriteIn(%q) succeeded outside the root", name)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); !os.IsNotExist(err) {
		t.Errorf("a file was written outside the root: %v", err)
	}
}

func TestWriteInFailureLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	// A directory in the way: the rename fails after the temporary file
	// was written.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteIn(root, "d", []byte("x"), 0o600); err == nil {
		t.Fatal("WriteIn over a non-empty directory succeeded")
	}
	assertOnly(t, dir, "d")
}

// assertOnly fails unless dir holds exactly the named entries (no
// temporary file left behind).
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}
