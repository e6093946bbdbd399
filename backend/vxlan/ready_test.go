package vxlan

import (
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
)

// TestReadyAfterFirstPass checks the readiness signal the agent waits on
// (READY=1): not closed before the first update, closed after the first
// pass of both families, with the device and the peer programmed.
func TestReadyAfterFirstPass(t *testing.T) {
	e := newEnvFamilies(t, true, true)
	r := startFamilies(t, e.a, e.ext, true, true)
	select {
	case <-r.Ready():
		t.Fatal("Ready closed before any update")
	default:
	}
	own := dualLease(ownSubnet.String(), hostA.String(), "", ownSubnetV6.String(), hostAV6.String(), "")
	r.updates <- backend.Update{Own: &own, Batch: snapshot(dualLease("10.5.2.0/24", "192.168.77.2", macB, "fc00:0:0:2::/64", "fd77::2", macC))}
	select {
	case <-r.Ready():
	case <-time.After(time.Minute): // bounds a hang only
		t.Fatal("Ready not closed a minute after the first update")
	}
	st := r.Status()
	if st.LastPass.IsZero() || st.Device == "" || st.DeviceV6 == "" {
		t.Fatalf("Ready closed but status says LastPass %v, devices %q and %q", st.LastPass, st.Device, st.DeviceV6)
	}
	waitEntries(t, e.a, "flannel.1", vx("10.5.2.0/24", "192.168.77.2", macB), 30*time.Second)
	waitEntriesV6(t, e.a, vx6("fc00:0:0:2::/64", "fd77::2", macC), 30*time.Second)
}
