package wireguard

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFile(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	path := filepath.Join(t.TempDir(), "run", "wgkey")
	k1, err := loadOrCreateKey(path, log)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := loadOrCreateKey(path, log)
	if err != nil || k2.k != k1.k {
		t.Fatalf("second load: %v; want the same key back", err)
	}
	secret := k1.k.String()
	for _, s := range []string{fmt.Sprint(k1), fmt.Sprintf("%+v %#v", k1, k1), logs.String()} {
		if strings.Contains(s, secret) {
			t.Errorf("the private key shows in %q", s)
		}
	}
	if !strings.Contains(logs.String(), k1.public().String()) {
		t.Errorf("log %q: want the public key", logs.String())
	}
}

func TestKeyFileInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgkey")
	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadOrCreateKey(path, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("loading a file without a key: %v; want an error naming it", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a key\n" {
		t.Errorf("the file was changed to %q", b)
	}
}

func TestKeyFileMadePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgkey")
	k, err := loadOrCreateKey(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	k2, err := loadOrCreateKey(path, slog.New(slog.DiscardHandler))
	if err != nil || k2.k != k.k {
		t.Fatalf("reload: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after load, want 0600", fi.Mode().Perm())
	}
}
