package masq

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
)

// TestMasqueradeTraffic sends pings through a router namespace that runs
// the rules, and checks the source address the far side sees:
//
//	pod 10.5.1.2 ── router (N 10.5.0.0/16, S 10.5.1.0/24) ── outside 192.168.99.2
//	                       └───────────────────────────────── peer pod 10.5.2.2
//
// The outside host has no route back to 10.5.0.0/16, so its reply reaches
// the pod only when the router masqueraded the request; the peer pod must
// see the pod's own address (no masquerade inside the cluster network).
func TestMasqueradeTraffic(t *testing.T) {
	requireCmd(t, "ping", "nft")
	for _, backend := range []string{"iptables", "nftables"} {
		t.Run(backend, func(t *testing.T) {
			guardRoot(t)
			pod, router, outside, peer := newNS(t), newNS(t), newNS(t), newNS(t)
			link := func(a *testNS, aName, aAddr string, b *testNS, bName, bAddr string) {
				a.sh(t, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
				a.sh(t, "ip", "addr", "add", aAddr, "dev", aName)
				b.sh(t, "ip", "addr", "add", bAddr, "dev", bName)
				a.sh(t, "ip", "link", "set", aName, "up")
				b.sh(t, "ip", "link", "set", bName, "up")
			}
			link(router, "vpod", "10.5.1.1/24", pod, "eth0", "10.5.1.2/24")
			link(router, "vout", "192.168.99.1/24", outside, "eth0", "192.168.99.2/24")
			link(router, "vpeer", "10.5.2.1/24", peer, "eth0", "10.5.2.2/24")
			pod.sh(t, "ip", "route", "add", "default", "via", "10.5.1.1")
			peer.sh(t, "ip", "route", "add", "10.5.0.0/16", "via", "10.5.2.1")
			// Count echo requests by source address on the far sides.
			for _, n := range []*testNS{outside, peer} {
				n.sh(t, "nft", "add table ip count; add counter ip count masq; add counter ip count pod; "+
					"add chain ip count in { type filter hook input priority 0; }; "+
					"add rule ip count in icmp type echo-request ip saddr 192.168.99.1 counter name masq; "+
					"add rule ip count in icmp type echo-request ip saddr 10.5.2.1 counter name masq; "+
					"add rule ip count in icmp type echo-request ip saddr 10.5.1.2 counter name pod")
			}

			var m Manager
			r := Rules{Network: netip.MustParsePrefix("10.5.0.0/16"), Subnet: netip.MustParsePrefix("10.5.1.0/24")}
			router.do(t, func() (err error) {
				if err := EnableForwarding(true, false); err != nil {
					return err
				}
				if backend == "iptables" {
					m, err = NewIPTables(testLogger(t))
				} else {
					m, err = NewNFTables(testLogger(t))
				}
				if err != nil {
					return err
				}
				return m.Apply(testCtx(t), r)
			})

			// One echo request, its answer awaited for wait seconds: long
			// enough for a loaded machine where an answer is expected.
			ping := func(dst, wait string) error {
				_, err := pod.try("ping", "-c", "1", "-W", wait, dst)
				return err
			}
			if err := ping("192.168.99.2", "30"); err != nil {
				t.Errorf("ping to the outside with masquerading: %v", err)
			}
			if err := ping("10.5.2.2", "30"); err != nil {
				t.Errorf("ping to the peer pod: %v", err)
			}
			assertCount(t, outside, "masq", 1)
			assertCount(t, outside, "pod", 0)
			assertCount(t, peer, "masq", 0)
			assertCount(t, peer, "pod", 1)

			// Without the rules the outside sees the pod's address and
			// cannot answer.
			router.do(t, func() error { return m.Remove(testCtx(t)) })
			if err := ping("192.168.99.2", "1"); err == nil {
				t.Error("ping to the outside succeeded after Remove")
			}
			assertCount(t, outside, "masq", 1)
			assertCount(t, outside, "pod", 1)
		})
	}
}

var packetsRe = regexp.MustCompile(`packets (\d+)`)

// assertCount checks that n's nft counter is want packets, waiting while
// it is below: a request that got no answer may be counted after ping gave
// up on it.
func assertCount(t *testing.T, n *testNS, counter string, want int) {
	t.Helper()
	got := 0
	await.Until(t, time.Minute, func() string { // the minute bounds a hang
		out := n.sh(t, "nft", "list", "counter", "ip", "count", counter)
		m := packetsRe.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no packet count in %q", out)
		}
		got, _ = strconv.Atoi(m[1])
		if got < want {
			return fmt.Sprintf("%s: counter %s = %d packets, want %d", n.Name, counter, got, want)
		}
		return ""
	})
	if got != want {
		t.Errorf("%s: counter %s = %d packets, want %d", n.Name, counter, got, want)
	}
}
