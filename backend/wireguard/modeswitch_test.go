package wireguard

import (
	"fmt"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/await"
)

// TestModeSwitch: a restart with another Mode (as the agent restarts the
// backend on a config change) leaves the devices the new Mode uses and
// nothing of the old one. From Mode separate to auto, flannel-wg-v6 goes
// with its peers, address and route, and flannel-wg carries both
// families; back to separate, flannel-wg-v6 comes back and flannel-wg
// keeps neither the IPv6 AllowedIPs nor the IPv6 address.
func TestModeSwitch(t *testing.T) {
	const separate, auto = `{"Type":"wireguard","Mode":"separate"}`, `{"Type":"wireguard","Mode":"auto"}`
	a, b := dualStackPair(t, separate)
	a.waitDevicePeers(t, DeviceName, "B's IPv4 subnet on A's flannel-wg", b.b.PublicKey()+" 10.5.2.0/24")
	a.waitDevicePeers(t, DeviceNameV6, "B's IPv6 subnet on A's flannel-wg-v6", b.b.PublicKey()+" fd00:5:0:2::/64")

	restart := func(cfg string) {
		t.Helper()
		for _, h := range []*host{a, b} {
			h.stop()
			h.start(t, cfg, time.Hour)
		}
		a.updates <- backend.Update{Own: a.lease(), Batch: snapshot(b.lease())}
		b.updates <- backend.Update{Own: b.lease(), Batch: snapshot(a.lease())}
	}

	restart(auto)
	a.waitPeers(t, "B on A's flannel-wg with both subnets", b.b.PublicKey()+" 10.5.2.0/24,fd00:5:0:2::/64")
	await.Eventually(t, wait, "B reachable from A over IPv6 through flannel-wg", func() error { return a.ping(b.subnet6.Addr().String()) })
	if out, err := a.ns.Try("ip", "link", "show", DeviceNameV6); err == nil {
		t.Errorf("%s left on A in Mode auto\n%s", DeviceNameV6, out)
	}

	restart(separate)
	a.waitDevicePeers(t, DeviceName, "B's IPv4 subnet alone on A's flannel-wg", b.b.PublicKey()+" 10.5.2.0/24")
	a.waitDevicePeers(t, DeviceNameV6, "B's IPv6 subnet on A's flannel-wg-v6 again", b.b.PublicKey()+" fd00:5:0:2::/64")
	await.Eventually(t, wait, "B reachable from A over IPv6 through flannel-wg-v6", func() error { return a.ping(b.subnet6.Addr().String()) })
	await.Eventually(t, wait, "no global IPv6 address on A's flannel-wg", func() error {
		out, err := a.ns.Try("ip", "-6", "addr", "show", "dev", DeviceName, "scope", "global")
		if err != nil || len(out) > 0 {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}
