package subnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/lease"
)

// dualOpts is regTestOpts(n) with an IPv6 VTEP in BackendV6Data.
func dualOpts(n int) AcquireOptions {
	o := regTestOpts(n)
	o.Attrs.BackendV6Data = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"06:00:00:00:%02x:%02x"}`, n>>8&0xff, n&0xff))
	return o
}

// TestAcquireDualStackConcurrentHolders starts 50 dual-stack holders at
// once, each with its own addresses and Registry over 5 clients: each gets
// a lease of both families, no subnet of either family is held twice, the
// stored values carry PublicIPv6 and BackendV6Data, and after all close
// and start again each gets both its subnets back.
func TestAcquireDualStackConcurrentHolders(t *testing.T) {
	t.Parallel()
	srv, cli, r0, _ := regTestEnv(t)
	cfg := regTestWithV6(regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0"), "fc00::/48", 64, "fc00:0:0:1::", "fc00:0:0:ffff::")
	const agents = 50
	clients := make([]*clientv3.Client, 5)
	for i := range clients {
		clients[i] = srv.Client(t)
	}
	ctx := regTestCtx(t, 2*regTestWait)

	holdAll := func() []lease.Lease {
		t.Helper()
		holders := make([]*Holder, agents)
		errs := make([]error, agents)
		var wg sync.WaitGroup
		for i := range agents {
			wg.Go(func() {
				r := NewRegistry(clients[i%len(clients)], r0.prefix, nil)
				holders[i], errs[i] = r.Hold(ctx, cfg, dualOpts(i))
			})
		}
		wg.Wait()
		leases := make([]lease.Lease, agents)
		for i, h := range holders {
			if errs[i] != nil {
				t.Fatalf("holder %d: %v", i, errs[i])
			}
			leases[i] = h.Lease()
			h.Close()
		}
		return leases
	}

	first := holdAll()
	got4, got6 := map[netip.Prefix]int{}, map[netip.Prefix]int{}
	for i, l := range first {
		if !l.Subnet.IsValid() || !l.IPv6Subnet.IsValid() || !cfg.Fits(l.Subnet, l.IPv6Subnet) {
			t.Errorf("holder %d got %s, want a lease of both families in the pools", i, l.Key())
		}
		if j, dup := got4[l.Subnet]; dup {
			t.Errorf("holders %d and %d both got %s", j, i, l.Subnet)
		}
		if j, dup := got6[l.IPv6Subnet]; dup {
			t.Errorf("holders %d and %d both got %s", j, i, l.IPv6Subnet)
		}
		got4[l.Subnet], got6[l.IPv6Subnet] = i, i
		want := dualOpts(i).Attrs
		if l.Attrs.PublicIPv6 != want.PublicIPv6 || !bytes.Equal(l.Attrs.BackendV6Data, want.BackendV6Data) {
			t.Errorf("holder %d lease attrs %+v, want PublicIPv6 %s and BackendV6Data %s", i, l.Attrs, want.PublicIPv6, want.BackendV6Data)
		}
	}
	if n := regTestCheckDistinct(t, cli, r0, cfg); n != agents {
		t.Errorf("%d keys stored, want %d", n, agents)
	}
	for rel, kv := range regTestKVs(t, cli, r0) {
		a, err := lease.ParseLeaseAttrs(kv.Value)
		if err != nil || !a.PublicIPv6.IsValid() || a.BackendV6Data == nil {
			t.Errorf("stored %s = %s (%v): want PublicIPv6 and BackendV6Data", rel, kv.Value, err)
		}
	}

	// Closing a holder leaves its key for its TTL (an agent restart):
	// every host takes both its subnets back.
	again := holdAll()
	for i := range again {
		if again[i].Subnet != first[i].Subnet || again[i].IPv6Subnet != first[i].IPv6Subnet {
			t.Errorf("holder %d: %s after restart, had %s", i, again[i].Key(), first[i].Key())
		}
	}
}
