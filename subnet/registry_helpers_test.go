package subnet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/etcdtest"
	"github.com/netagent/netagent/lease"
)

// regTestWait bounds a wait for something that happens unless the code is
// broken: only a hang exceeds it, however loaded the machine. It is never
// what a test asserts.
const regTestWait = 30 * time.Second

// regTestConfig builds an IPv4 vxlan config directly (not through
// ParseConfig): pool [min, max] of /subnetLen subnets of network.
func regTestConfig(network string, subnetLen int, min, max string) *lease.Config {
	return &lease.Config{
		EnableIPv4:  true,
		Network:     netip.MustParsePrefix(network),
		SubnetLen:   subnetLen,
		SubnetMin:   netip.PrefixFrom(netip.MustParseAddr(min), subnetLen),
		SubnetMax:   netip.PrefixFrom(netip.MustParseAddr(max), subnetLen),
		BackendType: "vxlan",
		Backend:     json.RawMessage(`{"Type":"vxlan"}`),
	}
}

// regTestWithV6 enables IPv6 on c with pool [min, max] of network.
func regTestWithV6(c *lease.Config, network string, subnetLen int, min, max string) *lease.Config {
	c.EnableIPv6 = true
	c.IPv6Network = netip.MustParsePrefix(network)
	c.IPv6SubnetLen = subnetLen
	c.IPv6SubnetMin = netip.PrefixFrom(netip.MustParseAddr(min), subnetLen)
	c.IPv6SubnetMax = netip.PrefixFrom(netip.MustParseAddr(max), subnetLen)
	return c
}

// regTestV6Only builds an IPv6-only config.
func regTestV6Only(network string, subnetLen int, min, max string) *lease.Config {
	c := regTestWithV6(&lease.Config{BackendType: "vxlan", Backend: json.RawMessage(`{"Type":"vxlan"}`)}, network, subnetLen, min, max)
	return c
}

// regTestOpts returns options for host number n: PublicIP 192.0.2.x /
// 198.51.100.x, and 2001:db8::n, with a VtepMAC derived from n.
func regTestOpts(n int) AcquireOptions {
	return AcquireOptions{
		Attrs: lease.LeaseAttrs{
			PublicIP:    netip.AddrFrom4([4]byte{192, 0, byte(2 + n/250), byte(1 + n%250)}),
			PublicIPv6:  netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(n >> 8), 15: byte(n) + 1}),
			BackendType: "vxlan",
			BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:%02x:%02x"}`, n>>8&0xff, n&0xff)),
		},
		TTL:         time.Hour,
		RenewMargin: 10 * time.Minute,
	}
}

// regTestEnv starts an etcd and returns a client of it and a Registry under
// a prefix of the test's own.
func regTestEnv(t *testing.T) (*etcdtest.Server, *clientv3.Client, *Registry, *regTestLog) {
	t.Helper()
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	log := &regTestLog{}
	return srv, cli, NewRegistry(cli, "/test/"+strings.ReplaceAll(t.Name(), "/", "_"), slog.New(log)), log
}

// regTestAwaitClosed drains ch until it is closed, failing t if that takes
// longer than d.
func regTestAwaitClosed[T any](t *testing.T, ch <-chan T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("channel not closed %v after cancel", d)
		}
	}
}

func regTestCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// regTestKVs returns the stored key-values under r's subnets/ prefix, by
// relative key.
func regTestKVs(t *testing.T, cli *clientv3.Client, r *Registry) map[string]*mvccpb.KeyValue {
	t.Helper()
	ctx := regTestCtx(t, regTestWait)
	resp, err := cli.Get(ctx, r.SubnetsPrefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	out := make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), r.SubnetsPrefix())] = kv
	}
	return out
}

// regTestPut writes a raw value under subnets/<rel>, with an etcd lease of
// ttl seconds when ttl > 0.
func regTestPut(t *testing.T, cli *clientv3.Client, r *Registry, rel, value string, ttl int64) {
	t.Helper()
	ctx := regTestCtx(t, regTestWait)
	var opts []clientv3.OpOption
	if ttl > 0 {
		g, err := cli.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, clientv3.WithLease(g.ID))
	}
	if _, err := cli.Put(ctx, r.SubnetsPrefix()+rel, value, opts...); err != nil {
		t.Fatal(err)
	}
}

func regTestValue(t *testing.T, a lease.LeaseAttrs) string {
	t.Helper()
	b, err := a.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// regTestLog is a slog.Handler that records every record, for tests that
// assert what was logged.
type regTestLog struct {
	mu   sync.Mutex
	recs []string
	at   []time.Time // when each of recs was logged
}

func (h *regTestLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *regTestLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *regTestLog) WithGroup(string) slog.Handler            { return h }
func (h *regTestLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.recs = append(h.recs, b.String())
	h.at = append(h.at, r.Time)
	h.mu.Unlock()
	return nil
}

// matching returns the records that contain every one of parts, and when
// each was logged (times taken by the logging goroutine, so that the
// intervals between one goroutine's records are lower bounds of the waits
// it made between them).
func (h *regTestLog) matching(parts ...string) ([]string, []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var recs []string
	var at []time.Time
next:
	for i, r := range h.recs {
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		recs = append(recs, r)
		at = append(at, h.at[i])
	}
	return recs, at
}

// count returns how many records contain every one of parts.
func (h *regTestLog) count(parts ...string) int {
	recs, _ := h.matching(parts...)
	return len(recs)
}

func (h *regTestLog) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.recs, "\n")
}
