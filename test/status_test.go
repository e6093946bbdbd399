package test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/await"
)

// offlineReport holds the fields of `netagent status --json` for a stopped
// agent that the test checks, by their documented names.
type offlineReport struct {
	Running      bool   `json:"running"`
	StatusSocket string `json:"status_socket"`
	SubnetFile   struct {
		Subnet string `json:"subnet"`
		MTU    int    `json:"mtu"`
	} `json:"subnet_file"`
	Etcd struct {
		Reachable bool   `json:"reachable"`
		Config    string `json:"config"`
		Leases    []struct {
			Subnet   string `json:"subnet"`
			PublicIP string `json:"public_ip"`
			Own      bool   `json:"own"`
		} `json:"leases"`
	} `json:"etcd"`
	Kernel struct {
		Devices []struct {
			Name string `json:"name"`
		} `json:"devices"`
		Routes []struct {
			Subnet string `json:"subnet"`
			Dev    string `json:"dev"`
		} `json:"routes"`
		Masquerade struct {
			Checked bool `json:"checked"`
			InPlace bool `json:"in_place"`
		} `json:"masquerade"`
	} `json:"kernel"`
}

// TestStatus: `netagent status` against running agents shows the lease,
// the peers programmed in the kernel, the masquerade rules and etcd, as a
// table and as JSON; against a stopped agent it says so and shows what the
// subnet file, etcd and the kernel hold.
func TestStatus(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	bin := binaries(t)["./cmd/netagent"]

	// JSON, running: wait for the peer to be programmed and masquerading in place.
	var r1 struct{ subnet string }
	await.Eventually(t, 60*time.Second, "h1 status shows h2 programmed", func() error {
		r, err := c.statusReport(h1)
		if err != nil {
			return err
		}
		switch {
		case !r.Running || !r.Ready:
			return errorf("running=%t ready=%t", r.Running, r.Ready)
		case r.Lease == nil || r.Lease.Subnet != infos[h1.Name].Subnet.String():
			return errorf("lease %+v, subnet file says %s", r.Lease, infos[h1.Name].Subnet)
		case r.Lease.Reservation || r.Lease.TTLSeconds <= 0:
			return errorf("lease %+v: want a lease with a TTL", r.Lease)
		case !r.Etcd.Reachable || r.Etcd.LastRenewal == nil:
			return errorf("etcd %+v", r.Etcd)
		case r.Backend == nil || r.Backend.Device != "flannel.1" || r.Backend.MTU != 1450:
			return errorf("backend %+v", r.Backend)
		case r.Interface == nil || r.Interface.PublicIP != h1.Underlay.Addr().String():
			return errorf("interface %+v, want public IP %s", r.Interface, h1.Underlay.Addr())
		case len(r.Peers) != 1:
			return errorf("peers %+v, want h2 only", r.Peers)
		case r.Peers[0].Subnet != infos[h2.Name].Subnet.String() || r.Peers[0].PublicIP != h2.Underlay.Addr().String() ||
			r.Peers[0].Mode != backend.ModeVXLAN || !r.Peers[0].Programmed || r.Peers[0].VtepMAC == "":
			return errorf("peer %+v", r.Peers[0])
		case !r.Masquerade.Enabled || !r.Masquerade.InPlace:
			return errorf("masquerade %+v", r.Masquerade)
		}
		r1.subnet = r.Lease.Subnet
		return nil
	})

	// Table, running.
	table := c.mustExec(h1.NS, bin, "status", "--status-socket="+statusSocket(h1))
	for _, want := range []string{"state:", "ready, healthy", "lease:", r1.subnet, "peers (1):",
		infos[h2.Name].Subnet.String(), "vxlan", "masquerade:", "rules in place", "flannel.1"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}

	// Stopped agent: the command says so, exits non-zero, and reads the
	// rest itself.
	if err := c.agent(h2).Stop(5 * time.Second); err != nil {
		t.Fatalf("stop h2's agent: %v", err)
	}
	offline := []string{bin, "status", "--status-socket=" + statusSocket(h2),
		"--etcd-endpoints=" + strings.Join(c.lab.EtcdEndpoints(), ","), "--subnet-file=" + h2.SubnetFile()}
	out, _, err := c.runSplit(h2.NS, offline...)
	if err == nil {
		t.Errorf("status of a stopped agent exited 0")
	}
	if !strings.HasPrefix(string(out), "netagent is not running on this host (no answer on "+statusSocket(h2)+")") {
		t.Errorf("status of a stopped agent does not say so first:\n%s", out)
	}
	for _, want := range []string{infos[h2.Name].Subnet.String(), infos[h1.Name].Subnet.String(), "(this host)", "flannel.1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("offline status lacks %q:\n%s", want, out)
		}
	}
	out, _, err = c.runSplit(h2.NS, append(offline, "--json")...)
	if err == nil {
		t.Errorf("status --json of a stopped agent exited 0")
	}
	var off offlineReport
	if err := json.Unmarshal(out, &off); err != nil {
		t.Fatalf("offline status --json: %v:\n%s", err, out)
	}
	if off.Running || off.StatusSocket != statusSocket(h2) || off.SubnetFile.Subnet != infos[h2.Name].Subnet.String() || off.SubnetFile.MTU != 1450 {
		t.Errorf("offline report %+v", off)
	}
	if !off.Etcd.Reachable || !strings.Contains(off.Etcd.Config, "10.5.0.0/16") || len(off.Etcd.Leases) != 2 {
		t.Errorf("offline etcd %+v", off.Etcd)
	}
	own := 0
	for _, l := range off.Etcd.Leases {
		if l.Own {
			own++
			if l.Subnet != infos[h2.Name].Subnet.String() || l.PublicIP != h2.Underlay.Addr().String() {
				t.Errorf("own lease %+v", l)
			}
		}
	}
	if own != 1 {
		t.Errorf("%d leases marked own, want 1: %+v", own, off.Etcd.Leases)
	}
	if len(off.Kernel.Devices) != 1 || off.Kernel.Devices[0].Name != "flannel.1" {
		t.Errorf("offline kernel devices %+v", off.Kernel.Devices)
	}
	if len(off.Kernel.Routes) != 1 || off.Kernel.Routes[0].Subnet != infos[h1.Name].Subnet.String() || off.Kernel.Routes[0].Dev != "flannel.1" {
		t.Errorf("offline kernel routes %+v, want h1's subnet via flannel.1", off.Kernel.Routes)
	}
	if !off.Kernel.Masquerade.Checked || !off.Kernel.Masquerade.InPlace {
		t.Errorf("offline masquerade %+v: the stopped agent left its rules", off.Kernel.Masquerade)
	}
}
