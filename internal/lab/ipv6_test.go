package lab

import (
	"strings"
	"testing"
	"time"
)

func TestTopologyIPv6(t *testing.T) {
	tests := []struct {
		name, mode string
	}{
		{"dual stack", DualStack},
		{"IPv6 only", IPv6Only},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, Options{Hosts: 2, RoutedHosts: 1, IPv6: tt.mode})
			ctx := testCtx(t, 30*time.Second)
			hosts := l.Hosts()
			if got := hosts[0].UnderlayV6.String(); got != "fd77::11/64" {
				t.Errorf("h1 IPv6 underlay %s, want fd77::11/64", got)
			}
			if got := hosts[2].UnderlayV6.String(); got != "fd88::13/64" {
				t.Errorf("h3 (routed) IPv6 underlay %s, want fd88::13/64", got)
			}
			if hosts[0].Underlay.IsValid() != (tt.mode == DualStack) {
				t.Errorf("h1 IPv4 underlay %s in mode %q", hosts[0].Underlay, tt.mode)
			}
			wantEtcd := "http://192.168.77.2:2379"
			if tt.mode == IPv6Only {
				wantEtcd = "http://[fd77::2]:2379"
			}
			if got := l.EtcdEndpoints(); len(got) != 1 || got[0] != wantEtcd {
				t.Errorf("EtcdEndpoints() = %v, want [%s]", got, wantEtcd)
			}
			for _, h := range hosts {
				out, err := l.Exec(ctx, h.NS, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
				if err != nil {
					t.Fatal(err)
				}
				if has := strings.Contains(string(out), "inet "); has != (tt.mode == DualStack) {
					t.Errorf("%s: IPv4 addresses %q in mode %q", h.Name, out, tt.mode)
				}
				out, err = l.Exec(ctx, h.NS, "ip", "-6", "route", "show", "default")
				if want := "default via " + h.GatewayV6.String() + " dev eth0"; err != nil || !strings.Contains(string(out), want) {
					t.Errorf("%s: IPv6 default route %q (%v), want %q", h.Name, out, err, want)
				}
				// No address is ever tentative: a fresh address works at once.
				out, err = l.Exec(ctx, h.NS, "ip", "-6", "addr", "show", "tentative")
				if err != nil || strings.TrimSpace(string(out)) != "" {
					t.Errorf("%s: tentative addresses %q, %v", h.Name, out, err)
				}
				for _, other := range hosts {
					if other != h {
						if _, err := l.Ping(ctx, h.NS, other.UnderlayV6.Addr(), PingOptions{Count: 1}); err != nil {
							t.Errorf("%s -> %s over IPv6: %v", h.Name, other.Name, err)
						}
					}
				}
				if _, err := l.Ping(ctx, h.NS, EtcdAddrV6, PingOptions{Count: 1}); err != nil {
					t.Errorf("%s -> etcd over IPv6: %v", h.Name, err)
				}
			}
			// The IPv6 underlay MTU is 1500: 1452 bytes of ICMPv6
			// payload fit unfragmented, 1453 do not.
			h1, h2 := hosts[0], hosts[1]
			if _, err := l.Ping(ctx, h1.NS, h2.UnderlayV6.Addr(), PingOptions{Count: 1, Size: 1452, DontFragment: true}); err != nil {
				t.Errorf("1452-byte IPv6 ping with DF: %v", err)
			}
			if _, err := l.Ping(ctx, h1.NS, h2.UnderlayV6.Addr(), PingOptions{Count: 1, Size: 1453, DontFragment: true}); err == nil {
				t.Error("1453-byte IPv6 ping with DF passed a 1500 MTU")
			}
		})
	}
}
