package kubestore

import "testing"

// TestServerURL checks that the status names the API server by scheme,
// host and port only.
func TestServerURL(t *testing.T) {
	for host, want := range map[string]string{
		"https://10.96.0.1:443":                   "https://10.96.0.1:443",
		"https://admin:secret@api.example:6443/x": "https://api.example:6443",
		"https://api.example/prefix?token=abc":    "https://api.example:443",
		"http://127.0.0.1:8080":                   "http://127.0.0.1:8080",
		"127.0.0.1:6443":                          "https://127.0.0.1:6443",
		"localhost:6443":                          "https://localhost:6443",
		"https://[fd00::1]:6443":                  "https://[fd00::1]:6443",
	} {
		if got := serverURL(host); got != want {
			t.Errorf("serverURL(%q) = %q, want %q", host, got, want)
		}
	}
}
