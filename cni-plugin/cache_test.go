package cniplugin

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestCacheName(t *testing.T) {
	tests := []struct {
		id, ifName string
		want       string // "" when refused
	}{
		{"0123abcdef", "eth0", "0123abcdef-eth0"},
		{"pod_1.a-b", "net1", "pod_1.a-b-net1"},
		{"../../etc/x", "eth0", ""},
		{"a/b", "eth0", ""},
		{"a..b", "eth0", ""},
		{".hidden", "eth0", ""},
		{"-a", "eth0", ""},
		{"", "eth0", ""},
		{"abc", "", ""},
		{"abc", "..x", ""},
		{"abc", "eth0/..", ""},
		{"abc", "e@1", ""},
		{"abc", "eth 0", ""},
		{strings.Repeat("a", 250), "eth0000", ""},
	}
	for _, tt := range tests {
		got, err := cacheName(tt.id, tt.ifName)
		if tt.want == "" {
			var e *types.Error
			if !errors.As(err, &e) || e.Code != types.ErrInvalidEnvironmentVariables {
				t.Errorf("cacheName(%q, %q) = %q, %v; want error code 4", tt.id, tt.ifName, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("cacheName(%q, %q) = %q, %v; want %q", tt.id, tt.ifName, got, err, tt.want)
		}
	}
}

func TestCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "netagent-cni")
	c := cache{dir: dir}

	if names, err := c.list(); err != nil || len(names) != 0 {
		t.Fatalf("list of a missing directory: %v, %v", names, err)
	}
	if _, err := c.read("a-eth0"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read from a missing directory: %v, want ErrNotExist", err)
	}
	if err := c.remove("a-eth0"); err != nil {
		t.Fatalf("remove from a missing directory: %v", err)
	}

	if err := c.write("a-eth0", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.write("a-eth0", []byte(`{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.write("b-eth0", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode: %v, %v; want 0700", st.Mode(), err)
	}
	st, err = os.Stat(filepath.Join(dir, "a-eth0"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("file mode: %v, %v; want 0600", st.Mode(), err)
	}
	got, err := c.read("a-eth0")
	if err != nil || string(got) != `{"x":2}` {
		t.Errorf("read: %s, %v", got, err)
	}
	// Temporary files and directories are not cache files.
	if err := os.WriteFile(filepath.Join(dir, ".a-eth0.1.tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	names, err := c.list()
	if err != nil || !slices.Equal(names, []string{"a-eth0", "b-eth0"}) {
		t.Errorf("list: %v, %v", names, err)
	}
	if err := c.remove("a-eth0"); err != nil {
		t.Fatal(err)
	}
	if err := c.remove("a-eth0"); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := c.read("a-eth0"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read after remove: %v", err)
	}
}

func TestCacheStaysInside(t *testing.T) {
	base := t.TempDir()
	c := cache{dir: filepath.Join(base, "data")}
	if err := c.write("ok-eth0", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// A symlink planted in the cache directory does not lead out of it.
	if err := os.Symlink(filepath.Join(base, "outside"), filepath.Join(base, "data", "link-eth0")); err != nil {
		t.Fatal(err)
	}
	if err := c.write("link-eth0", []byte("{}")); err == nil {
		if _, err := os.Stat(filepath.Join(base, "outside")); err == nil {
			t.Fatal("writing through a symlink created a file outside the cache directory")
		}
	}
	for _, name := range []string{"../escape", "/etc/escape"} {
		if err := c.write(name, []byte("{}")); err == nil {
			t.Errorf("write(%q) succeeded", name)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "escape")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was written outside the cache directory: %v", err)
	}
}
