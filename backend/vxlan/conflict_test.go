package vxlan

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
)

// withRev is l with create revision rev.
func withRev(l lease.Lease, rev int64) lease.Lease {
	l.CreateRevision, l.ModRevision = rev, rev
	return l
}

// waitRefused waits until the backend's status refuses exactly the keys
// of want, each with its reason and winner ("key reason<winner").
func waitRefused(t *testing.T, r *running, want ...string) {
	t.Helper()
	slices.Sort(want)
	await.Eventually(t, 5*time.Second, "the refused leases in status", func() error {
		var got []string
		for _, x := range r.Status().Refused {
			got = append(got, fmt.Sprintf("%s %s<%s", x.Key, x.Reason, x.Winner))
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("refused %q, want %q", got, want)
		}
		return nil
	})
}

// TestConflictingKeys: a second key for a programmed subnet, a key of a
// form the config does not allow, and a lease copying another's VTEP MAC
// are refused whatever order they come in, the older key's entries stay,
// and when either key goes the kernel holds what the remaining keys say
// (docs/compatibility.md §3.8).
func TestConflictingKeys(t *testing.T) {
	e := newEnv(t)
	r := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	honest := withRev(peerLease("10.5.2.0/24", "192.168.77.2", macB), 10)
	r.updates <- backend.Update{Own: own(), Batch: snapshot(honest)}
	b := vx("10.5.2.0/24", "192.168.77.2", macB)
	waitEntries(t, e.a, "flannel.1", b, 5*time.Second)

	// Scenario 1: the dual-stack key form with IPv6 off, another
	// PublicIP, same IPv4 subnet.
	dual := withRev(dualLease("10.5.2.0/24", "192.168.77.9", macC, "fd00:5::/64", "fd77::9", macC), 20)
	r.updates <- backend.Update{Batch: event(lease.EventAdded, dual)}
	waitRefused(t, r, dual.Key()+" key-form<10.5.2.0-24")
	waitEntries(t, e.a, "flannel.1", b, 5*time.Second)
	r.updates <- backend.Update{Batch: event(lease.EventRemoved, dual)}
	waitRefused(t, r)
	waitEntries(t, e.a, "flannel.1", b, 5*time.Second)

	// Scenario 2: another subnet, another PublicIP, B's VTEP MAC.
	clone := withRev(peerLease("10.5.3.0/24", "192.168.77.9", macB), 30)
	r.updates <- backend.Update{Batch: event(lease.EventAdded, clone)}
	waitRefused(t, r, "10.5.3.0-24 identity<10.5.2.0-24")
	waitEntries(t, e.a, "flannel.1", b, 5*time.Second)
	r.updates <- backend.Update{Batch: event(lease.EventRemoved, clone)}
	waitRefused(t, r)
	waitEntries(t, e.a, "flannel.1", b, 5*time.Second)

	// A lease copying this host's own VTEP MAC.
	mine := withRev(peerLease("10.5.4.0/24", "192.168.77.9", r.mac.String()), 40)
	r.updates <- backend.Update{Batch: event(lease.EventAdded, mine)}
	waitRefused(t, r, "10.5.4.0-24 identity<10.5.1.0-24")
	waitEntries(t, e.a, "flannel.1", b, 5*time.Second)
	r.updates <- backend.Update{Batch: event(lease.EventRemoved, mine)}
	waitRefused(t, r)

	// The older key goes while the clone is there: the clone is all
	// that is left, and it is programmed.
	r.updates <- backend.Update{Batch: event(lease.EventAdded, clone)}
	waitRefused(t, r, "10.5.3.0-24 identity<10.5.2.0-24")
	r.updates <- backend.Update{Batch: event(lease.EventRemoved, honest)}
	waitRefused(t, r)
	waitEntries(t, e.a, "flannel.1", vx("10.5.3.0/24", "192.168.77.9", macB), 5*time.Second)
	// It comes back, newer now: it is the one refused.
	back := withRev(honest, 50)
	r.updates <- backend.Update{Batch: event(lease.EventAdded, back)}
	waitRefused(t, r, "10.5.2.0-24 identity<10.5.3.0-24")
	waitEntries(t, e.a, "flannel.1", vx("10.5.3.0/24", "192.168.77.9", macB), 5*time.Second)

	// A snapshot decides the same way, in any order.
	r.updates <- backend.Update{Batch: snapshot(back, dual, clone)}
	waitRefused(t, r, "10.5.2.0-24 identity<10.5.3.0-24", dual.Key()+" key-form<")
	waitEntries(t, e.a, "flannel.1", vx("10.5.3.0/24", "192.168.77.9", macB), 5*time.Second)
}

// TestConflictingKeysDualStack: two dual-stack keys with one IPv4 subnet
// (another IPv6 subnet each): the older holds the IPv4 subnet, the other
// is refused there and programmed on the IPv6 side alone, until the older
// goes.
func TestConflictingKeysDualStack(t *testing.T) {
	e := newEnvFamilies(t, true, true)
	r := startFamilies(t, e.a, e.ext, true, true)
	first := withRev(dualLease("10.5.2.0/24", "192.168.77.2", macB, "fc00:0:0:2::/64", "fd77::2", macB), 10)
	second := withRev(dualLease("10.5.2.0/24", "192.168.77.3", macC, "fc00:0:0:3::/64", "fd77::3", macC), 11)
	own := dualLease(ownSubnet.String(), hostA.String(), "", ownSubnetV6.String(), hostAV6.String(), "")
	r.updates <- backend.Update{Own: &own, Batch: snapshot(second, first)}
	waitRefused(t, r, second.Key()+" subnet<"+first.Key())
	waitFamily(t, e.a, "flannel.1", netlink.FAMILY_V4, vx("10.5.2.0/24", "192.168.77.2", macB), 5*time.Second)
	waitFamily(t, e.a, "flannel-v6.1", netlink.FAMILY_V6, merge(
		vxOn("flannel-v6.1", "fc00:0:0:2::/64", "fd77::2", macB),
		vxOn("flannel-v6.1", "fc00:0:0:3::/64", "fd77::3", macC)), 5*time.Second)
	r.updates <- backend.Update{Batch: event(lease.EventRemoved, first)}
	waitRefused(t, r)
	waitFamily(t, e.a, "flannel.1", netlink.FAMILY_V4, vx("10.5.2.0/24", "192.168.77.3", macC), 5*time.Second)
	waitFamily(t, e.a, "flannel-v6.1", netlink.FAMILY_V6, vxOn("flannel-v6.1", "fc00:0:0:3::/64", "fd77::3", macC), 5*time.Second)
}

// TestNeighbourBeforeRoute: a new peer's neighbour and fdb entry reach the
// kernel before its route, for one lease event and for a snapshot big
// enough to be batched on two sockets (docs/compatibility.md §5.2).
func TestNeighbourBeforeRoute(t *testing.T) {
	e := newEnv(t)
	stop := make(chan struct{})
	defer close(stop)
	ord, err := backendtest.WatchOrder(e.a.Netns, stop)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	var leases []lease.Lease
	for i := range 250 { // more than one batch of batchSize on each socket
		leases = append(leases, peerLease(fmt.Sprintf("10.5.%d.0/24", 2+i), fmt.Sprintf("192.168.78.%d", 1+i),
			fmt.Sprintf("02:00:00:00:00:%02x", i)))
	}
	r.updates <- backend.Update{Own: own(), Batch: snapshot(leases...)}
	waitOrder(t, ord, len(leases))
	r.updates <- backend.Update{Batch: event(lease.EventAdded, peerLease("10.5.252.0/24", "192.168.77.252", "02:00:00:00:99:01"))}
	waitOrder(t, ord, len(leases)+1)
	// A peer moving from one subnet key to another in one batch of
	// several events.
	r.updates <- backend.Update{Batch: &lease.Batch{Events: []lease.Event{
		{Type: lease.EventRemoved, Lease: leases[0]},
		{Type: lease.EventAdded, Lease: peerLease("10.5.253.0/24", "192.168.77.253", "02:00:00:00:99:02")},
	}}}
	waitOrder(t, ord, len(leases)+2)
}

// waitOrder waits until ord counted n routes, and fails if any came
// before its neighbour or fdb entry.
func waitOrder(t *testing.T, ord *backendtest.Order, n int) {
	t.Helper()
	await.Eventually(t, 20*time.Second, "routes programmed after their neighbour and fdb entry", func() error {
		if err := ord.Err(); err != nil {
			t.Fatalf("route watch: %v", err)
		}
		got, early := ord.Routes()
		if len(early) > 0 {
			t.Fatalf("%d of %d routes reached the kernel before their neighbour or fdb entry: %v", len(early), got, early[:min(len(early), 5)])
		}
		if got < n {
			return fmt.Errorf("%d routes seen, want %d", got, n)
		}
		return nil
	})
}

// TestOneHostTwoKeys: two keys of one host (same PublicIP, so the same
// derived VTEP MAC: a host that moved to a reservation while its old
// lease lives on) do not conflict; both are programmed, and when either
// goes the other keeps the shared fdb entry, also through a full pass.
func TestOneHostTwoKeys(t *testing.T) {
	e := newEnv(t)
	r := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	k1 := withRev(peerLease("10.5.2.0/24", "192.168.77.2", macB), 10)
	k2 := withRev(peerLease("10.5.5.0/24", "192.168.77.2", macB), 20)
	both := merge(vx("10.5.2.0/24", "192.168.77.2", macB), vx("10.5.5.0/24", "192.168.77.2", macB))
	both.fdbs = both.fdbs[:1]
	r.updates <- backend.Update{Own: own(), Batch: snapshot(k1, k2)}
	waitEntries(t, e.a, "flannel.1", both, 5*time.Second)
	waitRefused(t, r)

	for _, gone := range []struct {
		l, stays lease.Lease
		left     entries
	}{{k1, k2, vx("10.5.5.0/24", "192.168.77.2", macB)}, {k2, k1, vx("10.5.2.0/24", "192.168.77.2", macB)}} {
		// The key that goes came last, so that it is the one the fdb
		// entry was programmed for.
		r.updates <- backend.Update{Batch: snapshot(gone.stays)}
		waitEntries(t, e.a, "flannel.1", gone.left, 5*time.Second)
		r.updates <- backend.Update{Batch: event(lease.EventAdded, gone.l)}
		waitEntries(t, e.a, "flannel.1", both, 5*time.Second)
		r.updates <- backend.Update{Batch: event(lease.EventRemoved, gone.l)}
		waitEntries(t, e.a, "flannel.1", gone.left, 5*time.Second)
		// A full pass (set off by a deleted route) must not take the
		// shared fdb entry for an orphan.
		st := r.Status().Counters
		dst := strings.Fields(gone.left.routes[0])[0]
		e.a.IP(t, "route", "del", dst)
		await.Eventually(t, 5*time.Second, "a pass that repaired the deleted route", func() error {
			now := r.Status().Counters
			if now.Passes <= st.Passes || now.Repairs["route"] <= st.Repairs["route"] {
				return fmt.Errorf("no pass has repaired the route yet")
			}
			return nil
		})
		got, err := read(e.a.Handle, "flannel.1", netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		if !got.equal(gone.left) {
			t.Errorf("after %s went and a full pass:\n%s\nwant\n%s", gone.l.Key(), got, gone.left)
		}
	}
}
