package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

// agentPrefix is the etcd prefix of the agent benchmarks (the default).
const agentPrefix = "/coreos.com/network"

// agentBin holds the binaries the agent benchmarks build, once per test
// binary, in a temporary directory that TestMain removes.
var agentBin struct {
	once sync.Once
	dir  string
	bins map[string]string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin.dir != "" {
		os.RemoveAll(agentBin.dir)
	}
	os.Exit(code)
}

// agentBinaries builds the agent, the lab (for etcd), the CNI plugin and
// the reference plugins it delegates to, once.
func agentBinaries(b *testing.B) map[string]string {
	b.Helper()
	agentBin.once.Do(func() {
		if agentBin.dir, agentBin.err = os.MkdirTemp("", "netagent-bench-bin"); agentBin.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		agentBin.bins, agentBin.err = lab.BuildBinaries(ctx, agentBin.dir,
			"./cmd/netagent-lab", "./cni-plugin/netagent-cni",
			"github.com/containernetworking/plugins/plugins/main/bridge",
			"github.com/containernetworking/plugins/plugins/ipam/host-local")
		if agentBin.err == nil {
			agentBin.bins["./cmd/netagent"], agentBin.err = agentShippedBinary(ctx, agentBin.dir)
		}
	})
	if agentBin.err != nil {
		b.Fatalf("build: %v", agentBin.err)
	}
	return agentBin.bins
}

// agentBinaryEnv, set to the path of a netagent binary, makes the agent
// benchmarks run it instead of the one they build: to compare builds
// (another -buildmode, cgo) on the same benchmark.
const agentBinaryEnv = "NETAGENT_BENCH_BINARY"

// agentShippedBinary builds netagent into dir the way scripts/package.sh
// builds the packaged binary (static, PIE, stripped, without gRPC's tracing
// and the Kubernetes store): its resident pages are part of the figures
// the memory benchmarks report. With agentBinaryEnv set it returns that
// path instead.
//
// Equivalent to: `CGO_ENABLED=0 go build -tags grpcnotrace,netagent_nokube
// -trimpath -buildmode=pie -ldflags "-s -w" -o DIR/netagent ./cmd/netagent`.
func agentShippedBinary(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv(agentBinaryEnv); p != "" {
		return p, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "netagent")
	cmd := exec.CommandContext(ctx, goBin, "build", "-tags", "grpcnotrace,netagent_nokube", "-trimpath", "-buildmode=pie", "-ldflags", "-s -w",
		"-o", bin, "github.com/netagent/netagent/cmd/netagent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build netagent: %w\n%s", err, out)
	}
	return bin, nil
}

// agentLab is a lab with etcd running and the network config written.
type agentLab struct {
	b    *testing.B
	ctx  context.Context
	lab  *lab.Lab
	etcd *clientv3.Client
	bins map[string]string
	// agents by host name.
	agents map[string]*lab.Proc
}

// newAgentLab builds a lab of hosts hosts, starts etcd and writes config
// as the network config. close removes everything; it is also registered
// with b.Cleanup, and may be called twice.
func newAgentLab(b *testing.B, hosts int, config string) (al *agentLab, close func()) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("agent benchmarks need root: they create network namespaces")
	}
	bins := agentBinaries(b)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := lab.New(ctx, lab.Options{Hosts: hosts, LabBinary: bins["./cmd/netagent-lab"]})
	if err != nil {
		cancel()
		b.Fatalf("lab: %v", err)
	}
	al = &agentLab{b: b, ctx: ctx, lab: l, bins: bins, agents: map[string]*lab.Proc{}}
	var once sync.Once
	close = func() {
		once.Do(func() {
			if al.etcd != nil {
				al.etcd.Close()
			}
			if err := l.Close(); err != nil {
				b.Errorf("lab close: %v", err)
			}
			cancel()
		})
	}
	b.Cleanup(close)
	if err := l.StartEtcd(ctx); err != nil {
		close()
		b.Fatalf("etcd: %v", err)
	}
	if al.etcd, err = l.EtcdClient(); err != nil {
		close()
		b.Fatalf("etcd client: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	if _, err := al.etcd.Put(pctx, agentPrefix+"/config", config); err != nil {
		close()
		b.Fatalf("put config: %v", err)
	}
	return al, close
}

// startAgent starts `netagent run` in h's namespace, with the arguments the
// end-to-end tests use (masquerading on, default resync intervals, info
// logs).
func (al *agentLab) startAgent(h *lab.Host) *lab.Proc {
	al.b.Helper()
	return al.startAgentAs(h, al.bins["./cmd/netagent"], al.lab.StartProcess, nil)
}

// startAgentWith is startAgent with env added to the agent's environment
// and extra flags after the others.
func (al *agentLab) startAgentWith(h *lab.Host, env []string, extra ...string) *lab.Proc {
	al.b.Helper()
	return al.startAgentAs(h, al.bins["./cmd/netagent"], al.lab.StartProcess, env, extra...)
}

// startAgentAs is startAgent with the netagent binary bin, started by
// start (the lab's StartProcess or StartProcessInNet), with env added to
// its environment and extra flags after the others.
func (al *agentLab) startAgentAs(h *lab.Host, bin string, start func(ns string, env []string, argv ...string) (*lab.Proc, error), env []string, extra ...string) *lab.Proc {
	al.b.Helper()
	p, err := start(h.NS, env, append([]string{
		bin, "run",
		"--etcd-endpoints=" + strings.Join(al.lab.EtcdEndpoints(), ","),
		"--subnet-file=" + h.SubnetFile(),
		"--docker-opts-file=" + filepath.Join(h.Dir, "docker"),
		"--status-socket=" + agentStatusSocket(h),
		"--ip-masq",
	}, extra...)...)
	if err != nil {
		al.b.Fatalf("start agent on %s: %v", h.Name, err)
	}
	al.agents[h.Name] = p
	return p
}

// awaitSubnetFile waits up to 30 s for h's agent to write its subnet file.
func (al *agentLab) awaitSubnetFile(h *lab.Host) {
	al.b.Helper()
	ctx, cancel := context.WithTimeout(al.ctx, 30*time.Second)
	defer cancel()
	if _, err := lab.AwaitSubnetFile(ctx, h); err != nil {
		if p := al.agents[h.Name]; p != nil {
			al.b.Logf("agent on %s:\n%s", h.Name, p.Tail(2000))
		}
		al.b.Fatal(err)
	}
}

// agentBackendStatus is the part of `netagent status --json` the
// benchmarks log.
type agentBackendStatus struct {
	Passes  uint64            `json:"passes"`
	Repairs map[string]uint64 `json:"repairs"`
}

// backendStatus asks h's agent for its data plane's counters.
func (al *agentLab) backendStatus(h *lab.Host) agentBackendStatus {
	al.b.Helper()
	ctx, cancel := context.WithTimeout(al.ctx, 10*time.Second)
	defer cancel()
	out, err := al.lab.Exec(ctx, h.NS, al.bins["./cmd/netagent"], "status", "--json", "--status-socket="+agentStatusSocket(h))
	if err != nil {
		al.b.Fatal(err)
	}
	var r struct {
		Backend *agentBackendStatus `json:"backend"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Backend == nil {
		al.b.Fatalf("status of %s: %v: %s", h.Name, err, out)
	}
	return *r.Backend
}

func agentStatusSocket(h *lab.Host) string { return filepath.Join(h.Dir, "netagent.sock") }

// handle returns a netlink handle in the lab namespace ns, closed at the
// end of the benchmark.
func (al *agentLab) handle(ns string) (*netlink.Handle, netns.NsHandle) {
	al.b.Helper()
	nsh, err := netns.GetFromPath(lab.NSPath(ns))
	if err != nil {
		al.b.Fatal(err)
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		nsh.Close()
		al.b.Fatal(err)
	}
	al.b.Cleanup(func() { h.Close(); nsh.Close() })
	return h, nsh
}

// agentMaxTxnOps is etcd's default limit of operations per transaction.
const agentMaxTxnOps = 128

// putPeerLeases writes the vxlan leases dpLease(from) .. dpLease(to-1),
// all attached to one etcd lease of an hour, agentMaxTxnOps per
// transaction. It returns the etcd lease, for more leases later.
func (al *agentLab) putPeerLeases(from, to int) clientv3.LeaseID {
	al.b.Helper()
	ctx, cancel := context.WithTimeout(al.ctx, time.Minute)
	defer cancel()
	grant, err := al.etcd.Grant(ctx, int64(time.Hour/time.Second))
	if err != nil {
		al.b.Fatalf("grant: %v", err)
	}
	for i := from; i < to; i += agentMaxTxnOps {
		var ops []clientv3.Op
		for j := i; j < min(i+agentMaxTxnOps, to); j++ {
			key, val := al.leaseKV(j)
			ops = append(ops, clientv3.OpPut(key, val, clientv3.WithLease(grant.ID)))
		}
		if _, err := al.etcd.Txn(ctx).Then(ops...).Commit(); err != nil {
			al.b.Fatalf("put leases %d..%d: %v", i, i+len(ops)-1, err)
		}
	}
	return grant.ID
}

// leaseKV is the etcd key and value of peer i (see dpPeer).
func (al *agentLab) leaseKV(i int) (key, val string) {
	al.b.Helper()
	l := dpLease(i)
	v, err := json.Marshal(l.Attrs)
	if err != nil {
		al.b.Fatalf("lease %d: %v", i, err)
	}
	return agentPrefix + "/subnets/" + lease.LeaseKey(l.Subnet, l.IPv6Subnet), string(v)
}

// agentLoad returns /proc/loadavg's first three fields, for the log.
func agentLoad() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
