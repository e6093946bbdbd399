package hostgw

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

// TestKeyFormRefused: with IPv6 off, a dual-stack key for a live host's
// subnet is refused even when it is older, in a small batch and in one
// big enough to be applied with a full pass (bigBatch), and its removal
// leaves the live host's route (docs/compatibility.md §3.8).
func TestKeyFormRefused(t *testing.T) {
	a, _ := nstest.Underlay(t)
	a.AddrAdd(t, "eth0", "192.168.77.1/24")
	ext := backendtest.Ext(t, a, "eth0", netip.MustParseAddr("192.168.77.1"))
	bk, err := New(backend.Options{Handle: a.Handle, Netns: a.Netns, Ext: ext, Config: &lease.Config{BackendType: Type}, ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	updates, _ := backendtest.Start(t, bk)
	own := v4Lease("10.5.1.0/24", "192.168.77.1")
	honest := v4Lease("10.5.2.0/24", "192.168.77.2")
	honest.CreateRevision = 10
	bad := dualLease("10.5.2.0/24", "192.168.77.9", "fc00:0:0:2::/64", "fd77::9")
	bad.CreateRevision = 5
	updates <- backend.Update{Own: &own, Batch: &lease.Batch{Snapshot: true, Events: []lease.Event{{Lease: own}, {Lease: honest}}}}
	want := []string{"10.5.2.0/24 via 192.168.77.2 dev eth0"}
	await.Eventually(t, 5*time.Second, "the honest peer's route", routesAre(a, want, nil))

	refused := func(want ...string) func() error {
		return func() error {
			var got []string
			for _, x := range bk.Status().Refused {
				got = append(got, x.Key+" "+x.Reason+"<"+x.Winner)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("refused %q, want %q", got, want)
			}
			return nil
		}
	}
	updates <- backend.Update{Batch: &lease.Batch{Events: []lease.Event{{Lease: bad}}}}
	await.Eventually(t, 5*time.Second, "the conflicting lease refused", refused(bad.Key()+" key-form<10.5.2.0-24"))
	await.Eventually(t, 5*time.Second, "the honest peer's route kept", routesAre(a, want, nil))
	updates <- backend.Update{Batch: &lease.Batch{Events: []lease.Event{{Type: lease.EventRemoved, Lease: bad}}}}
	await.Eventually(t, 5*time.Second, "no lease refused once the conflict is gone", refused())

	// A batch of 70 events: 69 new peers and the bad key again.
	big := &lease.Batch{}
	for i := range 69 {
		l := v4Lease(fmt.Sprintf("10.5.%d.0/24", 10+i), fmt.Sprintf("192.168.77.%d", 10+i))
		big.Events = append(big.Events, lease.Event{Lease: l})
		want = append(want, fmt.Sprintf("10.5.%d.0/24 via 192.168.77.%d dev eth0", 10+i, 10+i))
	}
	big.Events = append(big.Events, lease.Event{Lease: bad})
	slices.Sort(want)
	updates <- backend.Update{Batch: big}
	await.Eventually(t, 10*time.Second, "the conflicting lease refused in a large batch", refused(bad.Key()+" key-form<10.5.2.0-24"))
	await.Eventually(t, 10*time.Second, "every honest route of the large batch", routesAre(a, want, nil))
	updates <- backend.Update{Batch: &lease.Batch{Events: []lease.Event{{Type: lease.EventRemoved, Lease: bad}}}}
	await.Eventually(t, 5*time.Second, "no lease refused once the conflict is gone", refused())
	await.Eventually(t, 5*time.Second, "every honest route kept", routesAre(a, want, nil))
}
