package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/netagent/netagent/lease"
)

// upOptions are the flags of `netagent-lab up`.
type upOptions struct {
	hosts, routedHosts int
	containers         int
	// store is storeEtcd or storeKube.
	store   string
	backend string
	// runtime is what runs the containers: runtimeNone (namespaces the
	// lab attaches through netagent-cni), runtimeDocker or runtimePodman.
	runtime string
	network string
	// ipv6 is ipv6Off, ipv6Dual or ipv6Only; ipv6Network the IPv6 overlay
	// when it is not off.
	ipv6, ipv6Network string
	// networkSet and ipv6NetworkSet are true when --network and
	// --ipv6-network were given, so that a lab without that family can
	// refuse them.
	networkSet, ipv6NetworkSet bool
	dir                        string
	binDir                     string
	once, detach               bool
	wait                       bool
	timeout                    time.Duration
}

// binaryNames are the executables `up` needs in its binary directory:
// the agent, the CNI plugin and the reference plugins the chain runs.
var binaryNames = []string{"netagent", "netagent-cni", "bridge", "host-local", "portmap"}

// Validate reports a lab that cannot be built.
func (o *upOptions) Validate() error {
	switch {
	case o.hosts < 1:
		return fmt.Errorf("--hosts %d: want at least 1", o.hosts)
	case o.routedHosts < 0:
		return fmt.Errorf("--routed-hosts %d: want at least 0", o.routedHosts)
	case o.hosts+o.routedHosts > 50:
		return fmt.Errorf("%d hosts: the lab takes at most 50", o.hosts+o.routedHosts)
	case o.containers < 0 || o.containers > 20:
		return fmt.Errorf("--containers-per-host %d: want 0 to 20", o.containers)
	case o.store != storeEtcd && o.store != storeKube:
		return fmt.Errorf("--store %q: want %s or %s", o.store, storeEtcd, storeKube)
	case o.backend != "vxlan" && o.backend != "host-gw" && o.backend != "wireguard":
		return fmt.Errorf("--backend %q: want vxlan, host-gw or wireguard", o.backend)
	case o.backend == "host-gw" && o.routedHosts > 0:
		return errors.New("--backend host-gw needs every host on one L2 segment: use --routed-hosts 0, or vxlan")
	case o.ipv6 != ipv6Off && o.ipv6 != ipv6Dual && o.ipv6 != ipv6Only:
		return fmt.Errorf("--ipv6 %q: want off, dual or only", o.ipv6)
	case o.ipv6 == ipv6Off && o.ipv6NetworkSet:
		return errors.New("--ipv6-network needs --ipv6 dual or --ipv6 only")
	case o.ipv6 == ipv6Only && o.networkSet:
		return errors.New("--network is the IPv4 overlay, which an --ipv6 only lab does not have: drop it, or use --ipv6 dual")
	case o.runtime != runtimeNone && o.runtime != runtimeDocker && o.runtime != runtimePodman:
		return fmt.Errorf("--runtime %q: want %s, %s or %s", o.runtime, runtimeNone, runtimeDocker, runtimePodman)
	case o.runtime != runtimeNone && o.ipv6 != ipv6Off:
		return fmt.Errorf("--runtime %s: the lab runs its containers on IPv4 only: use --ipv6 off", o.runtime)
	case o.once && o.detach:
		return errors.New("--once and --detach exclude each other")
	case o.dir == "":
		return errors.New("--dir must not be empty")
	case o.timeout <= 0:
		return fmt.Errorf("--timeout %v: want a positive duration", o.timeout)
	}
	_, c, err := o.config()
	if err != nil {
		return err
	}
	// Every host leases one subnet of each family.
	hosts := uint64(o.hosts + o.routedHosts)
	if n := c.PoolSize(); c.EnableIPv4 && n < hosts {
		return fmt.Errorf("--network %s leases %d subnets of /%d, fewer than the %d hosts", o.network, n, c.SubnetLen, hosts)
	}
	if n := c.IPv6PoolSize(); c.EnableIPv6 && n < hosts {
		return fmt.Errorf("--ipv6-network %s leases %d subnets of /%d, fewer than the %d hosts", o.ipv6Network, n, c.IPv6SubnetLen, hosts)
	}
	return nil
}

// config returns the network config the lab writes to etcd, or to every
// host's net-conf.json with the kubernetes store (docs/compatibility.md §2): Network for IPv4, EnableIPv6 and IPv6Network
// for IPv6, EnableIPv4 false for an IPv6-only lab. It is checked with lease.ParseConfig as the
// agents will read it, each family on its own first so that an error
// names its flag; the parsed config is returned too.
func (o *upOptions) config() ([]byte, *lease.Config, error) {
	cfg := map[string]any{"Backend": map[string]string{"Type": o.backend}}
	if o.ipv6 != ipv6Only {
		p, err := netip.ParsePrefix(o.network)
		if err != nil {
			return nil, nil, fmt.Errorf("--network: %w", err)
		}
		if !p.Addr().Is4() {
			return nil, nil, fmt.Errorf("--network %s: want an IPv4 prefix (the IPv6 overlay is --ipv6-network)", o.network)
		}
		if err := checkConfig(map[string]any{"Network": p.String()}); err != nil {
			return nil, nil, fmt.Errorf("--network %s: %w", o.network, err)
		}
		cfg["Network"] = p.String()
	}
	if o.ipv6 != ipv6Off {
		p, err := netip.ParsePrefix(o.ipv6Network)
		if err != nil {
			return nil, nil, fmt.Errorf("--ipv6-network: %w", err)
		}
		if !p.Addr().Is6() || p.Addr().Is4In6() {
			return nil, nil, fmt.Errorf("--ipv6-network %s: want an IPv6 prefix", o.ipv6Network)
		}
		if err := checkConfig(map[string]any{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": p.String()}); err != nil {
			return nil, nil, fmt.Errorf("--ipv6-network %s: %w", o.ipv6Network, err)
		}
		cfg["EnableIPv6"] = true
		cfg["IPv6Network"] = p.String()
	}
	if o.ipv6 == ipv6Only {
		cfg["EnableIPv4"] = false
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, nil, err
	}
	c, err := lease.ParseConfig(b)
	if err != nil {
		return nil, nil, fmt.Errorf("network config %s: %w", b, err)
	}
	return b, c, nil
}

// checkConfig validates a network config made of fields with lease.ParseConfig.
func checkConfig(fields map[string]any) error {
	b, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	_, err = lease.ParseConfig(b)
	return err
}

// parseUp parses the flags of `netagent-lab up`.
func parseUp(args []string, stderr io.Writer) (*upOptions, error) {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &upOptions{}
	fs.IntVar(&o.hosts, "hosts", 3, "number of hosts on the underlay")
	fs.IntVar(&o.routedHosts, "routed-hosts", 0, "number of further hosts on a second underlay subnet, behind a router")
	fs.IntVar(&o.containers, "containers-per-host", 2, "containers on each host (see --runtime)")
	fs.StringVar(&o.store, "store", storeEtcd, "where the agents keep their leases: etcd (the lab's etcd) or kubernetes (a kube-apiserver, agents with --kube-subnet-mgr, a Node per host; its binaries come from scripts/kube-binaries.sh: ~10 minutes to build on the first run of a machine)")
	fs.StringVar(&o.backend, "backend", "vxlan", "backend: vxlan, host-gw or wireguard")
	fs.StringVar(&o.runtime, "runtime", runtimeNone, "what runs the containers: none (namespaces attached through netagent-cni), docker (a dockerd per host with the agent's Docker options) or podman (podman with its CNI backend and netagent-cni)")
	fs.StringVar(&o.network, "network", "10.5.0.0/16", "IPv4 overlay network (a /24 per host)")
	fs.StringVar(&o.ipv6, "ipv6", ipv6Off, "address families: off (IPv4 only), dual (dual stack) or only (IPv6 only), for the underlay, the overlay and the containers")
	fs.StringVar(&o.ipv6Network, "ipv6-network", "fd00:5::/48", "IPv6 overlay network with --ipv6 dual or only (a /64 per host)")
	fs.StringVar(&o.dir, "dir", defaultDir, "lab directory: state file lab.json, logs, hosts' files")
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding netagent, netagent-cni, bridge, host-local, portmap (default: this program's directory)")
	fs.BoolVar(&o.once, "once", false, "come up, print, tear down; exit status 0 only if every ping passed")
	fs.BoolVar(&o.wait, "wait", true, "stay up in the foreground until interrupted or `netagent-lab down` (the default)")
	fs.BoolVar(&o.detach, "detach", false, "stay up in the background; return once the lab is up")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long etcd, the agents and the containers may take to come up (with --runtime docker or podman, default 5m: engines and images start slowly on a loaded machine)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("up: unexpected arguments %q", fs.Args())}
	}
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) {
		o.networkSet = o.networkSet || f.Name == "network"
		o.ipv6NetworkSet = o.ipv6NetworkSet || f.Name == "ipv6-network"
		timeoutSet = timeoutSet || f.Name == "timeout"
	})
	if !timeoutSet && (o.runtime == runtimeDocker || o.runtime == runtimePodman) {
		o.timeout = runtimeTimeout
	}
	if err := o.Validate(); err != nil {
		return nil, usageError{fmt.Errorf("up: %w", err)}
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return nil, err
	}
	o.dir = dir
	return o, nil
}

// findBinaries returns the path of every binary `up` runs, by name, and
// the directory they are in.
func findBinaries(binDir string) (map[string]string, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	if binDir == "" {
		binDir = filepath.Dir(self)
	}
	if binDir, err = filepath.Abs(binDir); err != nil {
		return nil, "", err
	}
	bins := map[string]string{"netagent-lab": self}
	var missing []string
	for _, name := range binaryNames {
		p := filepath.Join(binDir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, name)
			continue
		}
		bins[name] = p
	}
	if len(missing) > 0 {
		return nil, "", fmt.Errorf("%v missing in %s: build them with scripts/lab.sh, or pass --bin-dir", missing, binDir)
	}
	return bins, binDir, nil
}

// runUp is `netagent-lab up`.
func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseUp(args, stderr)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("up: must run as root: the lab creates network namespaces")
	}
	if err := claimDir(ctx, o.dir, stdout); err != nil {
		return err
	}
	if o.detach {
		return runDetached(ctx, o, args, stdout)
	}
	bins, binDir, err := findBinaries(o.binDir)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return up(ctx, o, bins, binDir, stdout)
}

// claimDir makes the lab directory, and refuses it while another lab runs
// there. The namespaces of a lab whose process died without tearing down
// are removed.
func claimDir(ctx context.Context, dir string, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	s, err := readState(dir)
	if errors.Is(err, errNoLab) {
		// Logs a failed lab kept: a new lab starts with fresh ones.
		return os.RemoveAll(filepath.Join(dir, "logs"))
	}
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if upAlive(s.PID) {
		return fmt.Errorf("up: lab %s is already running in %s (pid %d): `netagent-lab down --dir %s` first, or use another --dir", s.Prefix, dir, s.PID, dir)
	}
	fmt.Fprintf(stdout, "removing the leftovers of lab %s (its process %d is gone)\n", s.Prefix, s.PID)
	if err := removeLeftovers(ctx, s); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return removeLabFiles(dir, false)
}

// removeLabFiles removes what a lab put in its directory (but its logs if
// keepLogs), and the directory itself if nothing else is left in it.
func removeLabFiles(dir string, keepLogs bool) error {
	names := []string{stateFileName, "hosts", "etcd", "kube"}
	if !keepLogs {
		names = append(names, "logs")
	}
	var errs []error
	for _, name := range names {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(dir) // only if empty
	return errors.Join(errs...)
}
