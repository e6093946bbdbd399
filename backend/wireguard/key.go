package wireguard

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/internal/atomicfile"
)

// DefaultKeyFile is where the private key is kept, as flannel keeps it;
// KeyFileEnv overrides it.
const (
	DefaultKeyFile = "/run/flannel/wgkey"
	KeyFileEnv     = "WIREGUARD_KEY_FILE"
)

// privateKey is a private key that never shows itself: String, logs and
// %v print "[redacted]".
type privateKey struct{ k wgtypes.Key }

func (p privateKey) String() string       { return "[redacted]" }
func (p privateKey) GoString() string     { return "[redacted]" }
func (p privateKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }
func (p privateKey) public() wgtypes.Key  { return p.k.PublicKey() }
func (p privateKey) key() *wgtypes.Key    { k := p.k; return &k }
func (p privateKey) isZero() bool         { return p.k == wgtypes.Key{} }

// loadOrCreateKey reads the private key from path (base64, as `wg genkey`
// writes it), or, when the file does not exist, generates one and writes
// it with mode 0600. A file that exists but holds no valid key is an
// error: replacing it would change the host's identity behind the
// operator's back. A file readable by others is made 0600.
func loadOrCreateKey(path string, log *slog.Logger) (privateKey, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return privateKey{}, fmt.Errorf("wireguard: generate private key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return privateKey{}, fmt.Errorf("wireguard: key file directory: %w", err)
		}
		if err := atomicfile.WriteFile(path, []byte(k.String()+"\n"), 0o600); err != nil {
			return privateKey{}, fmt.Errorf("wireguard: write key file %s: %w", path, err)
		}
		log.Info("generated a WireGuard private key", "file", path, "public_key", k.PublicKey().String())
		return privateKey{k}, nil
	case err != nil:
		return privateKey{}, fmt.Errorf("wireguard: read key file %s: %w", path, err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != wgtypes.KeyLen {
		return privateKey{}, fmt.Errorf("wireguard: key file %s does not hold a base64 private key of %d bytes", path, wgtypes.KeyLen)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("key file readable by others: making it 0600", "file", path, "mode", fi.Mode().Perm().String())
		if err := os.Chmod(path, 0o600); err != nil {
			return privateKey{}, fmt.Errorf("wireguard: chmod key file %s: %w", path, err)
		}
	}
	return privateKey{wgtypes.Key(raw)}, nil
}
