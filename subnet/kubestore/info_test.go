package kubestore

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
)

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

// TestInfoJSON checks the names the status JSON shows the store under.
func TestInfoJSON(t *testing.T) {
	data, err := json.Marshal(Info{})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	var counters map[string]uint64
	if err := json.Unmarshal(got["counters"], &counters); err != nil {
		t.Fatalf("counters %s: %v", got["counters"], err)
	}
	want := []string{"annotation_prefix", "api_server", "counters", "last_event", "net_config_path", "node", "synced"}
	wantCounters := []string{"events", "losses", "patch_failures", "patches", "restores", "watch_errors"}
	if k := slices.Sorted(maps.Keys(got)); !slices.Equal(k, want) {
		t.Errorf("Info's JSON fields %v, want %v", k, want)
	}
	if k := slices.Sorted(maps.Keys(counters)); !slices.Equal(k, wantCounters) {
		t.Errorf("Info's counters %v, want %v", k, wantCounters)
	}
}
