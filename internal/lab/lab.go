package lab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Underlay addresses; see the package documentation for the whole map.
var (
	// UnderlayA is the main underlay subnet, on the switch's br0.
	UnderlayA = netip.MustParsePrefix("192.168.77.0/24")
	// UnderlayB is the routed underlay subnet, on the switch's br1.
	UnderlayB = netip.MustParsePrefix("192.168.88.0/24")
	// GatewayA and GatewayB are the router's legs, the hosts' default
	// gateways.
	GatewayA = netip.MustParseAddr("192.168.77.1")
	GatewayB = netip.MustParseAddr("192.168.88.1")
	// EtcdAddr is the etcd namespace's underlay address.
	EtcdAddr = netip.MustParseAddr("192.168.77.2")

	// UnderlayA6, UnderlayB6, GatewayA6, GatewayB6 and EtcdAddrV6 are the
	// same for an IPv6 underlay (Options.IPv6).
	UnderlayA6 = netip.MustParsePrefix("fd77::/64")
	UnderlayB6 = netip.MustParsePrefix("fd88::/64")
	GatewayA6  = netip.MustParseAddr("fd77::1")
	GatewayB6  = netip.MustParseAddr("fd88::1")
	EtcdAddrV6 = netip.MustParseAddr("fd77::2")
)

// Underlay address families, the values of Options.IPv6.
const (
	// IPv4Only: IPv4 underlay addresses only (the default, "").
	IPv4Only = ""
	// DualStack: every underlay interface has an IPv6 address (the
	// host's fd77::(10+I)/64, or fd88:: behind the router) and an IPv6
	// default route besides its IPv4 ones; etcd serves on both
	// families, and EtcdEndpoints names the IPv4 one.
	DualStack = "dual"
	// IPv6Only: IPv6 underlay addresses only; etcd serves on
	// http://[fd77::2]:2379.
	IPv6Only = "v6only"
)

// UnderlayMTU is the MTU of every underlay link.
const UnderlayMTU = 1500

// EtcdClientPort is the port etcd serves clients on.
const EtcdClientPort = 2379

// maxHosts keeps host addresses (.11 and up) inside a /24.
const maxHosts = 200

// ErrNotRoot is returned by New when the process is not root.
var ErrNotRoot = errors.New("lab: must run as root")

// ErrForeignNamespace is returned when a helper is asked to work in a
// namespace that this lab did not create.
var ErrForeignNamespace = errors.New("lab: not a namespace of this lab")

// Options configures New.
type Options struct {
	// Hosts is the number of hosts on underlay A; at least 1.
	Hosts int
	// RoutedHosts is the number of further hosts on underlay B, behind the
	// router.
	RoutedHosts int
	// Dir holds the lab's files: logs/ (one log per process), hosts/NAME/
	// (each host's state directory), etcd/ (etcd's data) and kube/ (the
	// Kubernetes API server's, see KubeDir), the last two removed by
	// Close. Empty: a temporary directory that Close removes.
	Dir string
	// LabBinary is the netagent-lab executable, run as `netagent-lab etcd`
	// by StartEtcd. Needed only for StartEtcd.
	LabBinary string
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
	// IPv6 is the underlay's address families: IPv4Only (""), DualStack
	// or IPv6Only. IPv6 addresses are added without duplicate address
	// detection, and every namespace has accept_dad=0, so no address
	// (cni0's or an agent's included) is ever tentative.
	IPv6 string

	// afterStep, if set, is called after each setup step of New; an error
	// makes New fail there. Tests use it to check cleanup after a partial
	// setup.
	afterStep func(l *Lab, step string) error
}

// Validate reports options New cannot build.
func (o Options) Validate() error {
	if o.Hosts < 1 {
		return fmt.Errorf("lab: Hosts is %d, want at least 1", o.Hosts)
	}
	if o.RoutedHosts < 0 {
		return fmt.Errorf("lab: RoutedHosts is %d, want at least 0", o.RoutedHosts)
	}
	if n := o.Hosts + o.RoutedHosts; n > maxHosts {
		return fmt.Errorf("lab: %d hosts, at most %d", n, maxHosts)
	}
	switch o.IPv6 {
	case IPv4Only, DualStack, IPv6Only:
	default:
		return fmt.Errorf("lab: IPv6 is %q, want %q, %q or %q", o.IPv6, IPv4Only, DualStack, IPv6Only)
	}
	return nil
}

// Host is one simulated machine: a network namespace with an underlay
// interface eth0.
type Host struct {
	// Name is "h1", "h2", ...; NS its network namespace.
	Name, NS string
	// Underlay is eth0's address with its prefix length (invalid on an
	// IPv6-only underlay).
	Underlay netip.Prefix
	// Gateway is the host's default gateway on the underlay.
	Gateway netip.Addr
	// UnderlayV6 and GatewayV6 are the same for IPv6 (invalid on an
	// IPv4-only underlay).
	UnderlayV6 netip.Prefix
	GatewayV6  netip.Addr
	// Routed is true for a host on underlay B.
	Routed bool
	// Dir is the state directory for the host's agent.
	Dir string

	// bridge is cni0's subnet once AttachContainer made it; nextIP the
	// offset of the next container address in it. Guarded by Lab.mu.
	bridge netip.Prefix
	nextIP int
}

// SubnetFile is where the host's agent should write its subnet file
// (`--subnet-file`).
func (h *Host) SubnetFile() string { return filepath.Join(h.Dir, "subnet.env") }

// Lab is a running topology. Its methods are safe for concurrent use.
type Lab struct {
	prefix    string
	dir       string
	removeDir bool // dir was made by New
	labBinary string
	ipv6      string // Options.IPv6
	log       *slog.Logger
	hosts     []*Host

	attachMu sync.Mutex // serialises AttachContainer

	mu         sync.Mutex
	namespaces []string           // in creation order
	owned      map[string]bool    // namespace name -> still exists
	procs      map[*Proc]struct{} // started and not yet reaped by Close
	containers map[string]*Container
	etcd       *Proc
	closers    []func(context.Context) error // run first by Close, last added first
	seq        int                           // log file numbering
	closed     bool
}

// New builds the topology described in the package documentation. On error
// it removes whatever it had made. The caller must Close the Lab.
func New(ctx context.Context, opts Options) (_ *Lab, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix, err := pickPrefix(ctx)
	if err != nil {
		return nil, err
	}
	l := &Lab{
		prefix:     prefix,
		dir:        opts.Dir,
		labBinary:  opts.LabBinary,
		ipv6:       opts.IPv6,
		log:        log.With("lab", prefix),
		owned:      make(map[string]bool),
		procs:      make(map[*Proc]struct{}),
		containers: make(map[string]*Container),
	}
	if l.dir == "" {
		if l.dir, err = os.MkdirTemp("", "netagent-lab-"+prefix+"-"); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		l.removeDir = true
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	for _, d := range []string{"logs", "hosts"} {
		if err := os.MkdirAll(filepath.Join(l.dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
	}
	for i := 1; i <= opts.Hosts+opts.RoutedHosts; i++ {
		h := &Host{Name: fmt.Sprintf("h%d", i), Routed: i > opts.Hosts}
		h.NS = l.nsName(h.Name)
		h.Underlay, h.Gateway = netip.PrefixFrom(hostAddr(UnderlayA, i), UnderlayA.Bits()), GatewayA
		if h.Routed {
			h.Underlay, h.Gateway = netip.PrefixFrom(hostAddr(UnderlayB, i), UnderlayB.Bits()), GatewayB
		}
		if opts.IPv6 != IPv4Only {
			h.UnderlayV6, h.GatewayV6 = netip.PrefixFrom(hostAddrV6(UnderlayA6, i), UnderlayA6.Bits()), GatewayA6
			if h.Routed {
				h.UnderlayV6, h.GatewayV6 = netip.PrefixFrom(hostAddrV6(UnderlayB6, i), UnderlayB6.Bits()), GatewayB6
			}
		}
		if opts.IPv6 == IPv6Only {
			h.Underlay, h.Gateway = netip.Prefix{}, netip.Addr{}
		}
		h.Dir = filepath.Join(l.dir, "hosts", h.Name)
		if err := os.MkdirAll(h.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		l.hosts = append(l.hosts, h)
	}
	start := time.Now()
	if err := l.build(ctx, opts.RoutedHosts > 0, opts.afterStep); err != nil {
		return nil, err
	}
	l.log.Info("lab up", "hosts", opts.Hosts, "routed_hosts", opts.RoutedHosts, "dir", l.dir, "took", time.Since(start).Round(time.Millisecond))
	return l, nil
}

// hostAddr is host i's address in an underlay subnet: .10+i.
func hostAddr(subnet netip.Prefix, i int) netip.Addr {
	a := subnet.Masked().Addr().As4()
	a[3] = byte(10 + i)
	return netip.AddrFrom4(a)
}

// hostAddrV6 is host i's address in an IPv6 underlay subnet (a /64 whose
// address ends in "::"): the decimal digits of 10+i read as hexadecimal,
// so that h1 is fd77::11 as it is 192.168.77.11.
func hostAddrV6(subnet netip.Prefix, i int) netip.Addr {
	return netip.MustParseAddr(subnet.Masked().Addr().String() + strconv.Itoa(10+i))
}

// hasV4 and hasV6 report the underlay's address families.
func (l *Lab) hasV4() bool { return l.ipv6 != IPv6Only }
func (l *Lab) hasV6() bool { return l.ipv6 != IPv4Only }

// pickPrefix returns "na" and four random lower-case letters and digits,
// such that no existing namespace starts with it.
func pickPrefix(ctx context.Context) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	existing, err := ListNamespaces(ctx)
	if err != nil {
		return "", err
	}
	for range 20 {
		b := make([]byte, 4)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("lab: %w", err)
		}
		for i := range b {
			b[i] = alphabet[int(b[i])%len(alphabet)]
		}
		p := "na" + string(b)
		taken := false
		for _, ns := range existing {
			taken = taken || strings.HasPrefix(ns, p)
		}
		if !taken {
			return p, nil
		}
	}
	return "", errors.New("lab: no free namespace prefix")
}

// Prefix is the lab's namespace prefix: every namespace it makes is named
// Prefix()+"-...".
func (l *Lab) Prefix() string { return l.prefix }

// Dir is the lab's directory.
func (l *Lab) Dir() string { return l.dir }

// Hosts returns the hosts, h1 first.
func (l *Lab) Hosts() []*Host { return l.hosts }

// Host returns the host with the given name ("h1"), or nil.
func (l *Lab) Host(name string) *Host {
	for _, h := range l.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Families reports the underlay's address families (Options.IPv6).
func (l *Lab) Families() (v4, v6 bool) { return l.hasV4(), l.hasV6() }

// KubeDir is the directory of the lab's Kubernetes API server
// (internal/lab/kubelab): its etcd's data and its credentials. Close
// removes it.
func (l *Lab) KubeDir() string { return filepath.Join(l.dir, "kube") }

// SwitchNS, RouterNS and EtcdNS name the infrastructure namespaces.
func (l *Lab) SwitchNS() string { return l.nsName("sw") }
func (l *Lab) RouterNS() string { return l.nsName("rt") }
func (l *Lab) EtcdNS() string   { return l.nsName("etcd") }

func (l *Lab) nsName(suffix string) string { return l.prefix + "-" + suffix }

// Namespaces returns the names of the namespaces the lab currently owns, in
// creation order.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ns := range l.namespaces {
		if l.owned[ns] {
			out = append(out, ns)
		}
	}
	return out
}

// checkOwned returns ErrForeignNamespace unless ns is a live namespace of
// this lab. Every helper that runs something in a namespace calls it, so a
// mistake can never land in the initial namespace or someone else's.
func (l *Lab) checkOwned(ns string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.owned[ns] {
		return fmt.Errorf("%w: %q", ErrForeignNamespace, ns)
	}
	return nil
}

// Close stops every process the lab started (SIGTERM, then SIGKILL after a
// short grace), deletes every namespace it made, removes etcd's data
// directory and, if New made it, the lab directory. It may be called more
// than once, and after a failed New.
func (l *Lab) Close() error {
	l.mu.Lock()
	l.closed = true
	closers := l.closers
	l.closers = nil
	l.mu.Unlock()

	var errs []error
	// Container runtimes first: they remove their containers, mounts and
	// cgroups while their daemons still run.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}

	l.mu.Lock()
	procs := make([]*Proc, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	l.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(closeGrace) })
	}
	wg.Wait()
	l.mu.Lock()
	for _, p := range procs {
		delete(l.procs, p)
	}
	l.mu.Unlock()

	// Delete in reverse order: containers before their hosts, hosts before
	// the switch. Deleting a namespace removes its links, and a veth dies
	// with either end.
	namespaces := l.Namespaces()
	for i := len(namespaces) - 1; i >= 0; i-- {
		if err := l.deleteNS(ctx, namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range []string{l.etcdDir(), l.KubeDir()} {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	if l.removeDir {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return errors.Join(errs...)
}

// onClose registers f to run at the start of Close, before the lab's
// processes are stopped; the last registered runs first. It fails once
// the lab is closed.
func (l *Lab) onClose(f func(context.Context) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab: closed")
	}
	l.closers = append(l.closers, f)
	return nil
}

// closeGrace is how long Close waits for a process to exit after SIGTERM.
const closeGrace = 3 * time.Second
