package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/netagent/netagent/internal/lab"
)

// agentIperfSeconds is the length of one iperf3 test: one TCP stream.
const agentIperfSeconds = 5

// addContainer makes a container namespace NAME on h and attaches it with
// the netagent CNI plugin (delegating to bridge and host-local), as a
// runtime would, and returns the container and its address.
func (al *agentLab) addContainer(h *lab.Host, name string) (*lab.Container, netip.Addr) {
	al.b.Helper()
	ctx, cancel := context.WithTimeout(al.ctx, 30*time.Second)
	defer cancel()
	ctn, err := al.lab.AddContainerNS(ctx, h, name)
	if err != nil {
		al.b.Fatal(err)
	}
	conf, err := json.Marshal(map[string]any{
		"cniVersion":   "1.1.0",
		"name":         "netagent",
		"type":         "netagent-cni",
		"subnetFile":   h.SubnetFile(),
		"dataDir":      filepath.Join(h.Dir, "cni"),
		"statusSocket": agentStatusSocket(h),
		"ipam":         map[string]any{"dataDir": filepath.Join(h.Dir, "ipam")},
	})
	if err != nil {
		al.b.Fatal(err)
	}
	plugin := al.bins["./cni-plugin/netagent-cni"]
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.NS, "env",
		"CNI_COMMAND=ADD", "CNI_CONTAINERID="+ctn.NS, "CNI_NETNS="+lab.NSPath(ctn.NS),
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(plugin), plugin)
	cmd.Stdin = bytes.NewReader(conf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		al.b.Fatalf("CNI ADD of %s: %v: %s %s", ctn.NS, err, out, stderr.Bytes())
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) == 0 {
		al.b.Fatalf("CNI ADD result %s: %v", out, err)
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		al.b.Fatal(err)
	}
	return ctn, p.Addr()
}

// awaitPing pings dst from the lab namespace fromNS until a reply comes
// back, for at most 30 s.
func (al *agentLab) awaitPing(fromNS string, dst netip.Addr) {
	al.b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(al.ctx, 10*time.Second)
		_, err := al.lab.Ping(ctx, fromNS, dst, lab.PingOptions{Count: 1})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			al.b.Fatalf("%s does not reach %s: %v", fromNS, dst, err)
		}
	}
}

// iperf runs one bounded iperf3 TCP test from clientNS to dst, whose
// server runs in serverNS for that one test, and returns the throughput
// the receiver measured, in Gbit/s.
//
// Equivalent to: `ip netns exec SERVERNS iperf3 -s -1 &` then
// `ip netns exec CLIENTNS iperf3 -c DST -t 5 -J`.
func (al *agentLab) iperf(serverNS, clientNS string, dst netip.Addr) float64 {
	al.b.Helper()
	srv, err := al.lab.StartProcess(serverNS, nil, "iperf3", "-s", "-1", "-B", dst.String())
	if err != nil {
		al.b.Fatal(err)
	}
	defer func() {
		if err := srv.Stop(3 * time.Second); err != nil && !strings.Contains(err.Error(), "signal: terminated") {
			al.b.Logf("iperf3 server in %s: %v", serverNS, err)
		}
	}()
	// Wait for the server's listening socket.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(al.ctx, 5*time.Second)
		out, err := al.lab.Exec(ctx, serverNS, "ss", "-Hltn", "sport = :5201")
		cancel()
		if err == nil && len(bytes.TrimSpace(out)) > 0 {
			break
		}
		if srv.Exited() || time.Now().After(deadline) {
			al.b.Fatalf("iperf3 server in %s not listening (ss: %v):\n%s", serverNS, err, srv.Tail(1000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(al.ctx, (agentIperfSeconds+20)*time.Second)
	defer cancel()
	out, err := al.lab.Exec(ctx, clientNS, "iperf3", "-c", dst.String(), "-t", fmt.Sprint(agentIperfSeconds), "-J")
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || err != nil || res.Error != "" {
		al.b.Fatalf("iperf3 %s -> %s: %v %v %s", clientNS, dst, err, jerr, res.Error)
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		al.b.Fatalf("iperf3 %s -> %s: no throughput in %s", clientNS, dst, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}
