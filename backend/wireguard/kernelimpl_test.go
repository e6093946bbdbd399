package wireguard

import (
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
)

// kernelWireGuard reports whether the kernel creates wireguard links, by
// trying in a namespace of its own; why says what failed.
func kernelWireGuard(t *testing.T) (ok bool, why string) {
	t.Helper()
	ns := nstest.NewNS(t, "wgprobe")
	out, err := ns.Try("ip", "link", "add", "wgprobe", "type", "wireguard")
	if err != nil {
		return false, strings.TrimSpace(out)
	}
	return true, ""
}

// requireKernelWireGuard skips t on a kernel without WireGuard: the one
// case where the kernel implementation cannot be tested.
func requireKernelWireGuard(t *testing.T) {
	t.Helper()
	if ok, why := kernelWireGuard(t); !ok {
		t.Skipf("this kernel cannot create a wireguard link (%s): the kernel implementation is not tested here", why)
	}
}

func TestAutoOnThisKernel(t *testing.T) {
	hasKernel, _ := kernelWireGuard(t)
	a, b := pairImpl(t, ImplAuto, `{"Type":"wireguard"}`, time.Hour)
	await.Eventually(t, wait, "B reachable from A", func() error { return a.ping(b.overlay()) })
	want := ImplUserspace
	if hasKernel {
		want = ImplKernel
	}
	st := a.b.Status().WireGuard[0]
	if st.Impl != want || !strings.HasPrefix(st.ImplReason, "auto: ") {
		t.Errorf("auto chose %s (%s); this kernel has WireGuard: %t", st.Impl, st.ImplReason, hasKernel)
	}
	if typ := a.ns.Link(t, DeviceName).Type(); (typ == "wireguard") != hasKernel {
		t.Errorf("device type %s; this kernel has WireGuard: %t", typ, hasKernel)
	}
}

func TestKernelPingAndRestart(t *testing.T) {
	requireKernelWireGuard(t)
	a, b := pairImpl(t, ImplKernel, `{"Type":"wireguard"}`, time.Hour)
	await.Eventually(t, wait, "B reachable from A through the kernel's device", func() error { return a.ping(b.overlay()) })
	if typ := a.ns.Link(t, DeviceName).Type(); typ != "wireguard" {
		t.Fatalf("device type %s, want wireguard", typ)
	}
	// The agent gone, the kernel keeps the device and its peers: traffic
	// goes on.
	a.stop()
	if err := a.ping(b.overlay()); err != nil {
		t.Fatalf("with A's agent stopped: %v", err)
	}
	a.start(t, `{"Type":"wireguard"}`, time.Hour)
	a.updates <- backend.Update{Own: a.lease(), Batch: snapshot(b.lease())}
	<-a.b.Ready()
	if err := a.ping(b.overlay()); err != nil {
		t.Fatalf("after A's agent restarted: %v", err)
	}
	if r := a.repairs("peer"); r != 0 {
		t.Errorf("%d peers repaired after a restart: the kernel kept them", r)
	}
}
