package subnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
)

// regTestCheckDistinct fails unless the stored keys name each subnet at
// most once and every subnet fits cfg; it returns the number of keys.
func regTestCheckDistinct(t *testing.T, cli *clientv3.Client, r *Registry, cfg *lease.Config) int {
	t.Helper()
	seen := map[netip.Prefix]string{}
	kvs := regTestKVs(t, cli, r)
	for rel := range kvs {
		v4, v6, err := lease.ParseLeaseKey(rel)
		if err != nil {
			t.Errorf("stored key %q: %v", rel, err)
			continue
		}
		if !cfg.Fits(v4, v6) {
			t.Errorf("stored key %q does not fit the config", rel)
		}
		for _, p := range []netip.Prefix{v4, v6} {
			if !p.IsValid() {
				continue
			}
			if other, dup := seen[p]; dup {
				t.Errorf("subnet %s held twice: %q and %q", p, other, rel)
			}
			seen[p] = rel
		}
	}
	return len(kvs)
}

// TestAcquireConcurrentHolders starts 100 holders at once, each with its
// own PublicIP and Registry; they share 10 clientv3 clients (10 holders per
// client), as hosts would each have one.
func TestAcquireConcurrentHolders(t *testing.T) {
	t.Parallel()
	srv, cli, r0, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	const agents = 100
	clients := make([]*clientv3.Client, 10)
	for i := range clients {
		clients[i] = srv.Client(t)
	}
	ctx := regTestCtx(t, 2*regTestWait)
	holders := make([]*Holder, agents)
	errs := make([]error, agents)
	var wg sync.WaitGroup
	for i := range agents {
		wg.Go(func() {
			r := NewRegistry(clients[i%len(clients)], r0.prefix, nil)
			holders[i], errs[i] = r.Hold(ctx, cfg, regTestOpts(i))
		})
	}
	wg.Wait()
	got := map[netip.Prefix]int{}
	for i, h := range holders {
		if errs[i] != nil {
			t.Fatalf("holder %d: %v", i, errs[i])
		}
		defer h.Close()
		l := h.Lease()
		if !cfg.Fits(l.Subnet, l.IPv6Subnet) {
			t.Errorf("holder %d got %s outside the pool", i, l.Subnet)
		}
		if j, dup := got[l.Subnet]; dup {
			t.Errorf("holders %d and %d both got %s", j, i, l.Subnet)
		}
		got[l.Subnet] = i
		if l.Attrs.PublicIP != regTestOpts(i).Attrs.PublicIP {
			t.Errorf("holder %d lease has PublicIP %s", i, l.Attrs.PublicIP)
		}
	}
	if n := regTestCheckDistinct(t, cli, r0, cfg); n != agents {
		t.Errorf("%d keys stored, want %d", n, agents)
	}
}

// TestAcquirePoolExhausted has 40 agents compete for a pool of 16: exactly
// 16 win, the others are told the pool is exhausted, naming it.
func TestAcquirePoolExhausted(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.16.0")
	const agents = 40
	ctx := regTestCtx(t, 2*regTestWait)
	errs := make([]error, agents)
	var wg sync.WaitGroup
	for i := range agents {
		wg.Go(func() {
			for {
				_, errs[i] = r.TryAcquire(ctx, cfg, regTestOpts(i))
				if !errors.Is(errs[i], ErrLeaseConflict) {
					return
				}
			}
		})
	}
	wg.Wait()
	won, exhausted := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, ErrPoolExhausted):
			exhausted++
			if want := "subnet: pool exhausted: all 16 subnets of 10.5.1.0/24..10.5.16.0/24 are leased"; err.Error() != want {
				t.Errorf("agent %d: error %q, want %q", i, err, want)
			}
		default:
			t.Errorf("agent %d: %v", i, err)
		}
	}
	if won != 16 || exhausted != agents-16 {
		t.Errorf("%d won and %d exhausted, want 16 and %d", won, exhausted, agents-16)
	}
	if n := regTestCheckDistinct(t, cli, r, cfg); n != 16 {
		t.Errorf("%d keys stored, want 16", n)
	}
	// Every etcd lease granted for a lost race was revoked: 16 remain.
	leases, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 16 {
		t.Errorf("%d etcd leases exist, want 16 (one per key)", len(leases.Leases))
	}
}

// TestAcquireDualStackAndIPv6Only acquires concurrently from dual-stack and
// IPv6-only configs, and exhausts a small IPv6 pool.
func TestAcquireDualStackAndIPv6Only(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	ctx := regTestCtx(t, 2*regTestWait)
	tests := []struct {
		name    string
		cfg     *lease.Config
		agents  int
		winners int
		keyRe   func(rel string) bool
	}{
		{"dual", regTestWithV6(regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0"), "fc00::/48", 64, "fc00:0:0:1::", "fc00:0:0:ffff::"),
			20, 20, func(rel string) bool { return strings.Contains(rel, "-24&fc00:") && strings.HasSuffix(rel, "-64") }},
		// Small IPv6 pool: 4 subnets, so that random choices collide.
		{"dual small v6", regTestWithV6(regTestConfig("10.6.0.0/16", 24, "10.6.1.0", "10.6.255.0"), "fc01::/120", 122, "fc01::", "fc01::c0"),
			10, 4, func(rel string) bool { return strings.HasPrefix(rel, "10.6.") && strings.Contains(rel, "&fc01::") }},
		{"v6 only", regTestV6Only("fc02::/48", 64, "fc02:0:0:1::", "fc02:0:0:ffff::"),
			20, 20, func(rel string) bool { return strings.HasPrefix(rel, "fc02:") && !strings.Contains(rel, "&") }},
	}
	for ti, tt := range tests {
		errs := make([]error, tt.agents)
		var wg sync.WaitGroup
		for i := range tt.agents {
			wg.Go(func() {
				for {
					_, errs[i] = r.TryAcquire(ctx, tt.cfg, regTestOpts(1000*(ti+1)+i))
					if !errors.Is(errs[i], ErrLeaseConflict) {
						return
					}
				}
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			} else if !errors.Is(err, ErrPoolExhausted) {
				t.Errorf("%s: %v", tt.name, err)
			}
		}
		if won != tt.winners {
			t.Errorf("%s: %d acquired, want %d", tt.name, won, tt.winners)
		}
		n := 0
		for rel := range regTestKVs(t, cli, r) {
			if tt.keyRe(rel) {
				n++
			}
		}
		if n != tt.winners {
			t.Errorf("%s: %d keys of the expected form, want %d", tt.name, n, tt.winners)
		}
	}
	seen := map[netip.Prefix]string{}
	for rel := range regTestKVs(t, cli, r) {
		v4, v6, _ := lease.ParseLeaseKey(rel)
		for _, p := range []netip.Prefix{v4, v6} {
			if p.IsValid() {
				if other, dup := seen[p]; dup {
					t.Errorf("subnet %s held twice: %q and %q", p, other, rel)
				}
				seen[p] = rel
			}
		}
	}
}

// TestAcquireRestart: a holder closed and started again gets its subnet
// back by its PublicIP with a fresh etcd lease; with its key gone, through
// AcquireOptions.Previous.
func TestAcquireRestart(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 2*regTestWait)
	opts := regTestOpts(7)
	h, err := r.Hold(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	first := h.Lease()
	h.Close()
	before := regTestKVs(t, cli, r)[first.Key()]
	if before == nil {
		t.Fatalf("key %s gone after Close", first.Key())
	}

	h, err = r.Hold(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	second := h.Lease()
	h.Close()
	if second.Subnet != first.Subnet || second.CreateRevision != first.CreateRevision {
		t.Errorf("after restart got %s (created at %d), want %s (created at %d)", second.Subnet, second.CreateRevision, first.Subnet, first.CreateRevision)
	}
	after := regTestKVs(t, cli, r)[first.Key()]
	if after == nil || after.Lease == 0 || after.Lease == before.Lease {
		t.Errorf("restarted lease is not under a fresh etcd lease: before %x, after %v", before.Lease, after)
	}

	// Key gone (expired while the host was down): Previous wins over a
	// random choice.
	if _, err := cli.Delete(ctx, r.SubnetsPrefix()+first.Key()); err != nil {
		t.Fatal(err)
	}
	// Other hosts come and go meanwhile (with subnets of their own).
	var others []netip.Prefix
	for b := byte(1); len(others) < 5; b++ {
		if p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, b, 0}), 24); p != first.Subnet {
			others = append(others, p)
		}
	}
	for i, prev := range others {
		o := regTestOpts(100 + i)
		o.Previous = prev
		if l, err := r.TryAcquire(ctx, cfg, o); err != nil || l.Subnet != o.Previous {
			t.Fatalf("host %d: %v, %v", 100+i, l.Subnet, err)
		}
	}
	withPrev := opts
	withPrev.Previous = first.Subnet
	l, err := r.TryAcquire(ctx, cfg, withPrev)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != first.Subnet {
		t.Errorf("with Previous %s got %s", first.Subnet, l.Subnet)
	}

	// Previous taken by another host: a different, free subnet.
	other := regTestOpts(8)
	other.Previous = first.Subnet
	l2, err := r.TryAcquire(ctx, cfg, other)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Subnet == first.Subnet {
		t.Errorf("host 8 was given host 7's subnet %s", l2.Subnet)
	}
	regTestCheckDistinct(t, cli, r, cfg)
}

// TestAcquireReservation: a key without etcd lease naming our PublicIP is
// taken as it is, and keeps no etcd lease, even after the holder has run
// past its renewal time.
func TestAcquireReservation(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 2*regTestWait)

	same := regTestOpts(1)
	same.Attrs.PublicIPv6 = netip.Addr{}
	same.TTL, same.RenewMargin = 2*time.Second, time.Second
	changed := regTestOpts(2)
	changed.Attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:ff:ff"}`)
	changed.TTL, changed.RenewMargin = same.TTL, same.RenewMargin
	// A flannel-formatted value (other spacing and field order) with the
	// same attributes is also taken as it is.
	flannelValue := `{"PublicIP":"192.0.2.2", "BackendType":"vxlan","PublicIPv6":null,"BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}`
	regTestPut(t, cli, r, "10.5.200.0-24", flannelValue, 0)
	regTestPut(t, cli, r, "10.5.201.0-24", regTestValue(t, regTestOpts(2).Attrs), 0)

	tests := []struct {
		name      string
		opts      AcquireOptions
		key       string
		wantValue string
	}{
		{"same attrs", same, "10.5.200.0-24", flannelValue},
		{"new VtepMAC", changed, "10.5.201.0-24", regTestValue(t, changed.Attrs)},
	}
	for _, tt := range tests {
		h, err := r.Hold(ctx, cfg, tt.opts)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		defer h.Close()
		if l := h.Lease(); l.Key() != tt.key || !l.Reservation {
			t.Errorf("%s: got %s (reservation %v), want reservation %s", tt.name, l.Key(), l.Reservation, tt.key)
		}
	}
	// Past the renewal time and the TTL, the reservations are unchanged and
	// still have no etcd lease, and no holder re-acquired: a watch of
	// every key from now on sees no write, and no renewal is attempted.
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	writes := cli.Watch(wctx, r.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	// Only time passing can show that nothing happens: this wait is a
	// lower bound (a loaded machine makes it longer, never shorter).
	quiet := time.After(same.TTL + time.Second)
	for waiting := true; waiting; {
		select {
		case wr, ok := <-writes:
			if !ok {
				t.Fatal("watch of the keys ended")
			}
			for _, ev := range wr.Events {
				t.Errorf("%s %s = %s after the reservations were taken", ev.Type, ev.Kv.Key, ev.Kv.Value)
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
		case <-quiet:
			waiting = false
		}
	}
	kvs := regTestKVs(t, cli, r)
	for _, tt := range tests {
		kv := kvs[tt.key]
		if kv == nil || kv.Lease != 0 || string(kv.Value) != tt.wantValue || kv.ModRevision > resp.Header.Revision {
			t.Errorf("%s: reservation is now %v, want %s without lease", tt.name, kv, tt.wantValue)
		}
	}
	if len(kvs) != 2 {
		t.Errorf("keys: %v", kvs)
	}
	if st := r.Stats(); st.Renewals != 0 || st.RenewalFailures != 0 || st.LeaseLosses != 0 {
		t.Errorf("stats %+v: want no renewal attempt and no loss for reservations", st)
	}
}

// TestAcquireOwnLeaseNotFitting: this host's lease outside the pool, or of
// the wrong family, is not reused.
func TestAcquireOwnLeaseNotFitting(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.16.0")
	ctx := regTestCtx(t, 2*regTestWait)
	opts := regTestOpts(3)
	value := regTestValue(t, opts.Attrs)
	for _, rel := range []string{"10.5.200.0-24", "10.5.2.0-24&fc00::-64", "10.5.0.0-25"} {
		regTestPut(t, cli, r, rel, value, 600)
	}
	l, err := r.TryAcquire(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Fits(l.Subnet, l.IPv6Subnet) {
		t.Errorf("got %s, outside the pool", l.Key())
	}
	// 10.5.2.0/24 is held by the dual-stack key, 10.5.0.0/25 is outside
	// the pool anyway.
	if l.Subnet == netip.MustParsePrefix("10.5.2.0/24") {
		t.Errorf("got %s, held under another key form", l.Subnet)
	}
	if n := len(regTestKVs(t, cli, r)); n != 4 {
		t.Errorf("%d keys, want the 3 old ones and the new one", n)
	}
}

// TestAcquireSkipsMalformed: keys with unreadable values still count as
// taken, malformed keys are ignored, both are warned about by key.
func TestAcquireSkipsMalformed(t *testing.T) {
	t.Parallel()
	_, cli, r, log := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.3.0")
	ctx := regTestCtx(t, 2*regTestWait)
	regTestPut(t, cli, r, "10.5.3.0-24", `{"PublicIP":`, 0)
	regTestPut(t, cli, r, "garbage", `{}`, 0)
	regTestPut(t, cli, r, "10.5.1.0-24", strings.Repeat("x", lease.MaxLeaseValueSize+1), 0)
	l, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.5.2.0/24") {
		t.Errorf("got %s, want the only free subnet 10.5.2.0/24", l.Subnet)
	}
	if _, err := r.TryAcquire(ctx, cfg, regTestOpts(2)); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("second host: %v, want ErrPoolExhausted", err)
	}
	for _, key := range []string{"10.5.3.0-24", "garbage", "10.5.1.0-24"} {
		if log.count("WARN", r.SubnetsPrefix()+key) == 0 {
			t.Errorf("no warning names %s; log:\n%s", key, log)
		}
	}
	leases, _, err := r.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].Subnet != l.Subnet || leases[0].Reservation {
		t.Errorf("Leases() = %v, want only %s", leases, l.Key())
	}
}

// TestAcquireGuards checks the transaction guards directly: a subnet held
// under another key form, and a rival created after the list, make create
// fail without leaking an etcd lease.
func TestAcquireGuards(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	ctx := regTestCtx(t, 2*regTestWait)
	opts, err := regTestOpts(1).withDefaults(regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0"))
	if err != nil {
		t.Fatal(err)
	}
	value := []byte(regTestValue(t, opts.Attrs))
	p := netip.MustParsePrefix
	regTestPut(t, cli, r, "10.5.1.0-24&fc00::-64", regTestValue(t, regTestOpts(2).Attrs), 0)
	regTestPut(t, cli, r, "10.5.2.0-24", regTestValue(t, regTestOpts(3).Attrs), 0)
	regTestPut(t, cli, r, "fc00:0:0:3::-64", regTestValue(t, regTestOpts(4).Attrs), 0)
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	listRev := resp.Header.Revision
	// A rival created after the list, sharing the IPv6 subnet.
	regTestPut(t, cli, r, "10.5.9.0-24&fc00:0:0:4::-64", regTestValue(t, regTestOpts(5).Attrs), 0)

	tests := []struct {
		name   string
		v4, v6 netip.Prefix
		ok     bool
	}{
		{"v4 held in a dual key", p("10.5.1.0/24"), netip.Prefix{}, false},
		{"v4 held in a v4 key", p("10.5.2.0/24"), p("fc00:0:0:2::/64"), false},
		{"v6 held in a v6 key", p("10.5.3.0/24"), p("fc00:0:0:3::/64"), false},
		{"v6 held by a newer rival", p("10.5.4.0/24"), p("fc00:0:0:4::/64"), false},
		{"free", p("10.5.5.0/24"), p("fc00:0:0:5::/64"), true},
	}
	for _, tt := range tests {
		_, err := r.create(ctx, tt.v4, tt.v6, listRev, opts, value)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrLeaseConflict)) {
			t.Errorf("%s: create: %v", tt.name, err)
		}
		key := lease.LeaseKey(tt.v4, tt.v6)
		if exists := regTestKVs(t, cli, r)[key] != nil; exists != tt.ok {
			t.Errorf("%s: key %s exists: %v", tt.name, key, exists)
		}
	}
	leases, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 1 {
		t.Errorf("%d etcd leases, want 1 (the successful create's)", len(leases.Leases))
	}
}

func TestAcquireOptionsInvalid(t *testing.T) {
	r := NewRegistry(nil, "/x", nil)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	v6 := regTestV6Only("fc00::/48", 64, "fc00:0:0:1::", "fc00:0:0:ff::")
	opt := func(f func(*AcquireOptions)) AcquireOptions {
		o := regTestOpts(1)
		f(&o)
		return o
	}
	tests := []struct {
		name string
		cfg  *lease.Config
		opts AcquireOptions
		want string
	}{
		{"margin equals TTL", cfg, opt(func(o *AcquireOptions) { o.RenewMargin = o.TTL }), "RenewMargin 1h0m0s must be positive and shorter than TTL 1h0m0s"},
		{"margin beyond default TTL", cfg, opt(func(o *AcquireOptions) { o.TTL, o.RenewMargin = 0, 25*time.Hour }), "shorter than TTL 24h0m0s"},
		{"negative margin", cfg, opt(func(o *AcquireOptions) { o.RenewMargin = -time.Second }), "must be positive"},
		{"sub-second TTL", cfg, opt(func(o *AcquireOptions) { o.TTL = time.Millisecond }), "TTL 1ms is shorter than 1s"},
		{"no IPv4 PublicIP", cfg, opt(func(o *AcquireOptions) { o.Attrs.PublicIP = netip.Addr{} }), "Attrs.PublicIP"},
		{"no IPv6 PublicIP on v6-only", v6, opt(func(o *AcquireOptions) { o.Attrs.PublicIPv6 = netip.Addr{} }), "Attrs.PublicIPv6"},
		{"nil config", nil, regTestOpts(1), "neither IPv4 nor IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := regTestCtx(t, 5*time.Second)
			for name, call := range map[string]func() error{
				"TryAcquire": func() error { _, err := r.TryAcquire(ctx, tt.cfg, tt.opts); return err },
				"Acquire":    func() error { _, err := r.Acquire(ctx, tt.cfg, tt.opts); return err },
				"Hold":       func() error { _, err := r.Hold(ctx, tt.cfg, tt.opts); return err },
			} {
				err := call()
				if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: %v, want ErrInvalidOptions mentioning %q", name, err, tt.want)
				}
			}
		})
	}
	// Defaults apply when zero.
	o, err := AcquireOptions{Attrs: regTestOpts(1).Attrs}.withDefaults(cfg)
	if err != nil || o.TTL != DefaultLeaseTTL || o.RenewMargin != DefaultRenewMargin {
		t.Errorf("defaults: %+v, %v", o, err)
	}
}

// TestAcquireRetriesUntilFree: Acquire waits (with backoff, logging) while
// the pool is exhausted and succeeds once a subnet is freed.
func TestAcquireRetriesUntilFree(t *testing.T) {
	t.Parallel()
	_, cli, r, log := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.1.0")
	ctx := regTestCtx(t, 2*regTestWait)
	first, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var got lease.Lease
	go func() {
		var err error
		got, err = r.Acquire(ctx, cfg, regTestOpts(2))
		done <- err
	}()
	// Two attempts fail before the subnet is freed.
	await.Until(t, regTestWait, func() string {
		if n := log.count("cannot acquire", "pool exhausted", "10.5.1.0/24..10.5.1.0/24"); n < 2 {
			return fmt.Sprintf("%d exhaustion warnings, want 2", n)
		}
		return ""
	})
	if _, err := cli.Delete(ctx, r.SubnetsPrefix()+first.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || got.Subnet != first.Subnet {
			t.Fatalf("Acquire = %v, %v; want %s", got.Key(), err, first.Key())
		}
	case <-time.After(regTestWait):
		t.Fatal("Acquire did not succeed after the subnet was freed")
	}
	// Warnings come once per attempt, attempts are spaced by the backoff
	// each warning announces (log times are taken by Acquire's goroutine),
	// not in a flood.
	warnings, at := log.matching("cannot acquire")
	for i := 1; i < len(warnings); i++ {
		_, after, ok := strings.Cut(warnings[i-1], "retry_in=")
		wait, err := time.ParseDuration(strings.Fields(after + " ")[0])
		if !ok || err != nil {
			t.Fatalf("warning without retry_in: %s", warnings[i-1])
		}
		// retry_in is rounded to the millisecond.
		if gap := at[i].Sub(at[i-1]); gap < wait-time.Millisecond {
			t.Errorf("warning %d came %v after the one announcing a retry in %v", i+1, gap, wait)
		}
	}
}
