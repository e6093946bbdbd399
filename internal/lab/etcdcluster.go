package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// EtcdPeerPort is the port etcd members talk to each other on.
const EtcdPeerPort = 2380

// maxEtcdMembers keeps member addresses (.2 up) below the hosts' (.11 up).
const maxEtcdMembers = 8

// EtcdMember is one member of an EtcdCluster, in its own namespace on
// underlay A.
type EtcdMember struct {
	// Name is "m1", "m2", ...; NS its namespace (member 1 lives in the
	// lab's etcd namespace, member i in P-etcdI).
	Name, NS string
	// Addr is its underlay address: 192.168.77.(1+i).
	Addr netip.Addr

	proc *Proc // guarded by EtcdCluster.mu
}

// ClientURL is the URL agents reach the member at.
func (m *EtcdMember) ClientURL() string {
	return "http://" + netip.AddrPortFrom(m.Addr, EtcdClientPort).String()
}

// PeerURL is the URL the other members reach the member at.
func (m *EtcdMember) PeerURL() string {
	return "http://" + netip.AddrPortFrom(m.Addr, EtcdPeerPort).String()
}

// EtcdCluster is a multi-member etcd in the lab, for tests of member
// failures and partitions. Its methods are safe for concurrent use.
type EtcdCluster struct {
	l *Lab
	// Members are the members, m1 first.
	Members []*EtcdMember

	mu sync.Mutex
}

// StartEtcdCluster starts an etcd cluster of n members (1 to 8), each a
// `netagent-lab etcd` process in its own namespace: member 1 in the lab's
// etcd namespace at EtcdAddr (192.168.77.2), member i in a new namespace
// P-etcdI at 192.168.77.(1+i), wired to the switch like a host. It returns
// once every member answers a request. It is an alternative to StartEtcd,
// not an addition: use one or the other in a lab.
//
// Equivalent to, per new member: `ip netns add P-etcdI; ip -n P-sw link add
// etcdI type veth peer name eth0 netns P-etcdI; ...; netagent-lab etcd
// --initial-cluster m1=http://192.168.77.2:2380,...`.
func (l *Lab) StartEtcdCluster(ctx context.Context, n int) (*EtcdCluster, error) {
	if n < 1 || n > maxEtcdMembers {
		return nil, fmt.Errorf("lab: %d etcd members, want 1 to %d", n, maxEtcdMembers)
	}
	if l.labBinary == "" {
		return nil, errors.New("lab: Options.LabBinary is empty: cannot run etcd")
	}
	c := &EtcdCluster{l: l}
	for i := 1; i <= n; i++ {
		m := &EtcdMember{Name: fmt.Sprintf("m%d", i), NS: l.EtcdNS(), Addr: EtcdAddr}
		if i > 1 {
			a := EtcdAddr.As4()
			a[3] += byte(i - 1)
			m.NS, m.Addr = l.nsName(fmt.Sprintf("etcd%d", i)), netip.AddrFrom4(a)
			if err := l.addMemberNS(ctx, m); err != nil {
				return nil, err
			}
		}
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		if err := c.start(m, "new"); err != nil {
			return nil, err
		}
	}
	for _, m := range c.Members {
		if err := c.await(ctx, m); err != nil {
			return nil, err
		}
	}
	l.log.Info("etcd cluster ready", "members", n, "endpoints", strings.Join(c.Endpoints(), ","))
	return c, nil
}

// addMemberNS makes a member's namespace and its port on underlay A.
func (l *Lab) addMemberNS(ctx context.Context, m *EtcdMember) error {
	if err := l.addNS(ctx, m.NS); err != nil {
		return err
	}
	port := strings.TrimPrefix(m.NS, l.prefix+"-")
	if err := l.ipBatch(ctx, l.SwitchNS(),
		fmt.Sprintf("link add %s mtu %d type veth peer name eth0 mtu %d netns %s", port, UnderlayMTU, UnderlayMTU, m.NS),
		fmt.Sprintf("link set %s master br0 up", port),
	); err != nil {
		return err
	}
	return l.ipBatch(ctx, m.NS,
		addrCmd(netip.PrefixFrom(m.Addr, UnderlayA.Bits()), "eth0"),
		"link set eth0 up",
		"route add default via "+GatewayA.String(),
	)
}

// start starts m's process; state is "new" or "existing".
func (c *EtcdCluster) start(m *EtcdMember, state string) error {
	var initial []string
	for _, o := range c.Members {
		initial = append(initial, o.Name+"="+o.PeerURL())
	}
	p, err := c.l.StartProcess(m.NS, nil, c.l.labBinary, "etcd",
		"--name", m.Name,
		"--data-dir", filepath.Join(c.l.etcdDir(), m.Name),
		"--listen-client-urls", m.ClientURL(),
		"--listen-peer-urls", m.PeerURL(),
		"--initial-advertise-peer-urls", m.PeerURL(),
		"--initial-cluster", strings.Join(initial, ","),
		"--initial-cluster-state", state,
	)
	if err != nil {
		return err
	}
	c.mu.Lock()
	m.proc = p
	c.mu.Unlock()
	return nil
}

// await polls m from inside its namespace until it answers a
// linearizable read (which needs a quorum).
func (c *EtcdCluster) await(ctx context.Context, m *EtcdMember) error {
	p := c.Proc(m)
	cli, err := c.l.etcdClientIn(m.NS, []string{m.ClientURL()})
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(attempt, "/netagent-lab/ready")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("lab: etcd member %s exited before it was ready: %v\n%s", m.Name, p.err, p.Tail(2048))
		case <-ctx.Done():
			return fmt.Errorf("lab: waiting for etcd member %s: %w (last error: %v)\n%s", m.Name, ctx.Err(), err, p.Tail(2048))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Endpoints returns every member's client URL, as agents are given them.
func (c *EtcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL())
	}
	return eps
}

// Proc returns m's current process.
func (c *EtcdCluster) Proc(m *EtcdMember) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.proc
}

// Client returns a client of every member whose connections are made
// inside member 1's namespace (see DialInNS); the namespace outlives the
// member's process, so the client fails over to the others. The caller
// closes it.
func (c *EtcdCluster) Client() (*clientv3.Client, error) {
	return c.l.etcdClientIn(c.Members[0].NS, c.Endpoints())
}

// Kill kills m with SIGKILL, as a crash would, and waits for it.
func (c *EtcdCluster) Kill(m *EtcdMember) error {
	p := c.Proc(m)
	if p == nil || p.Exited() {
		return fmt.Errorf("%w: member %s", ErrEtcdNotRunning, m.Name)
	}
	return p.Kill()
}

// Restart starts a killed or stopped member again on its data and waits
// until it answers.
func (c *EtcdCluster) Restart(ctx context.Context, m *EtcdMember) error {
	if p := c.Proc(m); p != nil && !p.Exited() {
		return fmt.Errorf("%w: member %s", ErrEtcdRunning, m.Name)
	}
	if err := c.start(m, "existing"); err != nil {
		return err
	}
	return c.await(ctx, m)
}

// Member returns the member serving url, or nil.
func (c *EtcdCluster) Member(url string) *EtcdMember {
	for _, m := range c.Members {
		if m.ClientURL() == url {
			return m
		}
	}
	return nil
}

// etcdClientIn returns a client of endpoints whose connections are made
// inside the lab namespace ns. It does not wait for etcd.
func (l *Lab) etcdClientIn(ns string, endpoints []string) (*clientv3.Client, error) {
	if err := l.checkOwned(ns); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return DialInNS(ctx, ns, "tcp", addr)
			}),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("lab: etcd client: %w", err)
	}
	return cli, nil
}
