package subnet

import (
	"testing"
	"time"
)

// TestRenewRetryMaxOf: the wait between renewal attempts while etcd is
// unreachable stays a fraction of the TTL, so that a lease is renewed soon
// after etcd returns (it restarts every TTL then), however short the TTL.
func TestRenewRetryMaxOf(t *testing.T) {
	for _, tt := range []struct{ ttl, want time.Duration }{
		{0, 500 * time.Millisecond},
		{time.Second, 500 * time.Millisecond},
		{10 * time.Second, 2 * time.Second},
		{time.Minute, 12 * time.Second},
		{24 * time.Hour, renewRetryMax},
	} {
		if got := renewRetryMaxOf(tt.ttl); got != tt.want {
			t.Errorf("renewRetryMaxOf(%v) = %v, want %v", tt.ttl, got, tt.want)
		}
	}
}
