package bench

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/wireguard"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

// uapiPeers asks the userspace device behind socket for its
// configuration, as `wg show` does (`get=1`), and returns its peers'
// public keys in the UAPI's hex form.
func uapiPeers(socket string) (map[string]bool, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return nil, err
	}
	peers := make(map[string]bool)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			return peers, nil
		}
		if k, ok := strings.CutPrefix(line, "public_key="); ok {
			peers[k] = true
		}
		if e, ok := strings.CutPrefix(line, "errno="); ok && e != "0" {
			return nil, fmt.Errorf("uapi get: errno %s", e)
		}
	}
	return nil, fmt.Errorf("uapi get: %v before the end of the answer", sc.Err())
}

// BenchmarkWireGuardEventLatency measures, with 5,000 peers configured on
// the userspace implementation, the time from an Update with one new
// lease (a new host, a new key) being sent to the backend to its peer
// being configured on the device; p50 and p99 over 50 events. The end is
// when the backend takes the next (empty) Update from its unbuffered
// channel: the engine programs a lease event before it reads on, and the
// device's configuration call returns once the peer is in place. After
// each event the device is read (untimed, as `wg show` does) to check
// that the peer is there.
func BenchmarkWireGuardEventLatency(b *testing.B) {
	nstest.RequireRoot(b)
	const events = 50
	keys := wgKeys(b, dpPeers+events)
	var all []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		w := startWGBench(b)
		w.coldStart(keys[:dpPeers])
		<-w.bk.Ready()
		socket := filepath.Join(w.sockDir, wireguard.DeviceName+".sock")
		for k := range events {
			key := keys[dpPeers+k]
			ev := &lease.Batch{Events: []lease.Event{{Lease: wgLease(dpPeers+k, key)}}}
			b.StartTimer()
			t0 := time.Now()
			w.updates <- backend.Update{Batch: ev}
			w.updates <- backend.Update{}
			all = append(all, time.Since(t0))
			b.StopTimer()
			peers, err := uapiPeers(socket)
			if err != nil {
				b.Fatal(err)
			}
			if !peers[hex.EncodeToString(key[:])] || len(peers) != dpPeers+k+1 {
				b.Fatalf("event %d: %d peers on the device, the new one present: %v; want %d", k, len(peers), peers[hex.EncodeToString(key[:])], dpPeers+k+1)
			}
		}
		w.stop()
	}
	slices.Sort(all)
	b.Logf("%d events: p50 %v, p99 %v, max %v", len(all), all[len(all)/2], all[len(all)*99/100], all[len(all)-1])
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "ms-p99")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "ms-max")
}
