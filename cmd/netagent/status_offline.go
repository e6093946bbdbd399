package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/masq"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnetfile"
)

// offlineTimeout bounds what `netagent status` spends reading etcd when the
// agent does not answer.
const offlineTimeout = 5 * time.Second

// OfflineReport is what `netagent status --json` prints when the agent does
// not answer on its socket: what can be read without it, from the subnet
// file, etcd and the kernel. Field names are stable.
type OfflineReport struct {
	// Running is always false (kept for scripts that read it); State is
	// "not running" (no socket, or nothing listens on it) or "not
	// answering" (something listens but did not answer: a stopped or
	// wedged agent). StatusSocket is the socket asked and Error why it
	// did not answer.
	Running      bool              `json:"running"`
	State        string            `json:"state"`
	StatusSocket string            `json:"status_socket"`
	Error        string            `json:"error"`
	SubnetFile   OfflineSubnetFile `json:"subnet_file"`
	// Store is the agent's cluster store: "etcd", read here, or
	// "kubernetes" (--kube-subnet-mgr), which only the agent reads (Etcd
	// then says so in its error).
	Store  string        `json:"store"`
	Etcd   OfflineEtcd   `json:"etcd"`
	Kernel OfflineKernel `json:"kernel"`
}

// OfflineSubnetFile is the subnet file the agent last wrote.
type OfflineSubnetFile struct {
	Path  string `json:"path"`
	Error string `json:"error,omitempty"`
	// The rest is the file's content when it could be read.
	Network     string `json:"network,omitempty"`
	Subnet      string `json:"subnet,omitempty"`
	IPv6Network string `json:"ipv6_network,omitempty"`
	IPv6Subnet  string `json:"ipv6_subnet,omitempty"`
	MTU         int    `json:"mtu,omitempty"`
	IPMasq      bool   `json:"ip_masq"`
}

// OfflineEtcd is the network config and the leases as etcd has them.
type OfflineEtcd struct {
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	Reachable bool     `json:"reachable"`
	Error     string   `json:"error,omitempty"`
	// Config is the network config's one-line summary, or why it is not
	// usable.
	Config      string         `json:"config,omitempty"`
	ConfigError string         `json:"config_error,omitempty"`
	Leases      []OfflineLease `json:"leases"`
}

// OfflineLease is one lease in etcd.
type OfflineLease struct {
	Subnet      string `json:"subnet,omitempty"`
	IPv6Subnet  string `json:"ipv6_subnet,omitempty"`
	PublicIP    string `json:"public_ip,omitempty"`
	BackendType string `json:"backend_type"`
	Reservation bool   `json:"reservation"`
	// Own is true for the lease of the subnet in the subnet file.
	Own bool `json:"own"`
}

// OfflineKernel is what the agent left in the kernel.
type OfflineKernel struct {
	Error   string          `json:"error,omitempty"`
	Devices []OfflineDevice `json:"devices"`
	// Routes are the routes with the agent's protocol (78).
	Routes     []OfflineRoute    `json:"routes"`
	Masquerade OfflineMasquerade `json:"masquerade"`
}

// OfflineDevice is a VXLAN device named flannel.N.
type OfflineDevice struct {
	Name    string `json:"name"`
	MTU     int    `json:"mtu"`
	Up      bool   `json:"up"`
	VtepMAC string `json:"vtep_mac"`
}

// OfflineRoute is one route the agent installed.
type OfflineRoute struct {
	Subnet string `json:"subnet"`
	Via    string `json:"via,omitempty"`
	Dev    string `json:"dev"`
}

// OfflineMasquerade says whether the rules for the subnet file's lease are
// in place (checked only when the file says the agent masquerades).
type OfflineMasquerade struct {
	Checked bool   `json:"checked"`
	InPlace bool   `json:"in_place"`
	Reason  string `json:"reason,omitempty"`
}

// offlineStatus gathers an OfflineReport. It only reads: nothing in etcd
// or the kernel is changed.
func offlineStatus(ctx context.Context, socket string, askErr error, subnetFile string, o *agent.Options) *OfflineReport {
	r := &OfflineReport{StatusSocket: socket, Error: askErr.Error(), Store: agent.StoreEtcd}
	r.SubnetFile.Path = subnetFile
	info, err := subnetfile.Read(subnetFile)
	if err != nil {
		r.SubnetFile.Error = err.Error()
	} else {
		sf := &r.SubnetFile
		sf.Network, sf.Subnet = addrString(info.Network), addrString(info.Subnet)
		sf.IPv6Network, sf.IPv6Subnet = addrString(info.IPv6Network), addrString(info.IPv6Subnet)
		sf.MTU, sf.IPMasq = info.MTU, info.IPMasq
	}
	if o.Kube.Enabled {
		r.Store = agent.StoreKubernetes
		r.Etcd = OfflineEtcd{Leases: []OfflineLease{}, Error: errKubeOffline.Error()}
	} else {
		r.Etcd = offlineEtcd(ctx, o.Etcd, info)
	}
	r.Kernel = offlineKernel(ctx, info, err == nil, agent.MasqNames(o.InstanceKey()))
	return r
}

// errKubeOffline says why the leases are not shown without the agent in
// kube mode.
var errKubeOffline = errors.New("kube mode (--kube-subnet-mgr): the leases are the Nodes' annotations on the API server, which only the running agent reads (kubectl get nodes -o yaml shows them)")

func addrString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func offlineEtcd(ctx context.Context, eo agent.EtcdOptions, own subnetfile.Info) OfflineEtcd {
	e := OfflineEtcd{Endpoints: eo.Endpoints, Prefix: eo.Prefix, Leases: []OfflineLease{}}
	cli, err := agent.NewEtcdClient(eo)
	if err != nil {
		e.Error = err.Error()
		return e
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, offlineTimeout)
	defer cancel()
	reg := subnet.NewRegistry(cli, eo.Prefix, nil)
	leases, _, err := reg.Leases(ctx)
	if err != nil {
		e.Error = err.Error()
		return e
	}
	e.Reachable = true
	for _, l := range leases {
		ol := OfflineLease{Subnet: addrString(l.Subnet), IPv6Subnet: addrString(l.IPv6Subnet),
			BackendType: l.Attrs.BackendType, Reservation: l.Reservation,
			Own: (l.Subnet.IsValid() && l.Subnet == own.Subnet) || (l.IPv6Subnet.IsValid() && l.IPv6Subnet == own.IPv6Subnet)}
		if l.Attrs.PublicIP.IsValid() {
			ol.PublicIP = l.Attrs.PublicIP.String()
		} else if l.Attrs.PublicIPv6.IsValid() {
			ol.PublicIP = l.Attrs.PublicIPv6.String()
		}
		e.Leases = append(e.Leases, ol)
	}
	cfg, _, err := reg.Config(ctx)
	if err != nil {
		e.ConfigError = err.Error()
	} else {
		e.Config = cfg.String()
	}
	return e
}

// offlineKernel reads the agent's devices, routes and masquerade rules in
// this network namespace.
//
// Equivalent to: `ip -d link show type vxlan`, `ip route show proto 78`,
// `iptables -t nat -S FLANNEL-POSTRTG`.
func offlineKernel(ctx context.Context, info subnetfile.Info, haveInfo bool, masqNames masq.Names) OfflineKernel {
	k := OfflineKernel{Devices: []OfflineDevice{}, Routes: []OfflineRoute{}}
	h, err := netlink.NewHandle()
	if err != nil {
		k.Error = err.Error()
		return k
	}
	defer h.Close()
	links, err := backend.RetryDump(h.LinkList)
	if err != nil {
		k.Error = fmt.Sprintf("list links: %v", err)
		return k
	}
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		if l.Type() == "vxlan" && strings.HasPrefix(a.Name, "flannel.") {
			k.Devices = append(k.Devices, OfflineDevice{Name: a.Name, MTU: a.MTU, Up: a.Flags&1 != 0 && a.OperState != netlink.OperDown, VtepMAC: a.HardwareAddr.String()})
		}
	}
	routes, err := backend.RetryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{Table: syscall.RT_TABLE_MAIN, Protocol: backend.RouteProtocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		k.Error = fmt.Sprintf("list routes: %v", err)
	}
	for _, rt := range routes {
		or := OfflineRoute{Dev: names[rt.LinkIndex]}
		if rt.Dst != nil {
			or.Subnet = rt.Dst.String()
		}
		if rt.Gw != nil {
			or.Via = rt.Gw.String()
		}
		k.Routes = append(k.Routes, or)
	}
	slices.SortFunc(k.Routes, func(a, b OfflineRoute) int { return strings.Compare(a.Subnet, b.Subnet) })
	if haveInfo && info.IPMasq {
		k.Masquerade = offlineMasq(ctx, info, masqNames)
	}
	return k
}

// offlineMasq checks the iptables rules for the subnet file's lease, then
// the nftables ones when those are not in place, under the instance's names.
func offlineMasq(ctx context.Context, info subnetfile.Info, names masq.Names) OfflineMasquerade {
	rules := masq.Rules{Network: info.Network, Subnet: info.Subnet, IPv6Network: info.IPv6Network, IPv6Subnet: info.IPv6Subnet}
	log := slog.New(slog.DiscardHandler)
	m := OfflineMasquerade{Checked: true}
	var reasons []string
	if ipt, err := masq.NewIPTables(log, masq.WithChains(names)); err == nil {
		ok, why, err := ipt.Check(ctx, rules)
		if err == nil && ok {
			m.InPlace = true
			return m
		}
		reasons = append(reasons, "iptables: "+errOr(err, why))
	}
	if nft, err := masq.NewNFTables(log, masq.WithTable(names.Table)); err == nil {
		ok, why, err := nft.Check(ctx, rules)
		if err == nil && ok {
			m.InPlace = true
			return m
		}
		reasons = append(reasons, "nftables: "+errOr(err, why))
	}
	m.Reason = strings.Join(reasons, "; ")
	return m
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// printOffline prints r as an admin reads it.
func printOffline(w io.Writer, r *OfflineReport) {
	if r.State == "not answering" {
		fmt.Fprintf(w, "netagent is NOT ANSWERING on %s: the socket accepts connections but no answer came (is the agent stopped, e.g. SIGSTOP, or wedged?)\n", r.StatusSocket)
	} else {
		fmt.Fprintf(w, "netagent is not running on this host (no answer on %s)\n", r.StatusSocket)
	}
	fmt.Fprintf(w, "  %s\n\nwhat can be read without it:\n\n", r.Error)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	sf := r.SubnetFile
	if sf.Error != "" {
		p("subnet file", sf.Path+": "+sf.Error)
	} else {
		p("subnet file", fmt.Sprintf("%s  subnet %s  network %s  mtu %d  ip-masq %t",
			sf.Path, orDash(strings.TrimSpace(sf.Subnet+" "+sf.IPv6Subnet)), orDash(strings.TrimSpace(sf.Network+" "+sf.IPv6Network)), sf.MTU, sf.IPMasq))
	}
	e := r.Etcd
	switch {
	case r.Store == agent.StoreKubernetes:
		p("store", "kubernetes: "+e.Error)
	case !e.Reachable:
		p("etcd", fmt.Sprintf("%s  prefix %s  NOT answering: %s", strings.Join(e.Endpoints, ","), e.Prefix, e.Error))
	default:
		p("etcd", fmt.Sprintf("%s  prefix %s  answering", strings.Join(e.Endpoints, ","), e.Prefix))
		p("network config", orDash(e.Config+e.ConfigError))
	}
	var devs []string
	for _, d := range r.Kernel.Devices {
		state := "down"
		if d.Up {
			state = "up"
		}
		devs = append(devs, fmt.Sprintf("%s (mtu %d, %s, vtep %s)", d.Name, d.MTU, state, d.VtepMAC))
	}
	p("devices", orDash(strings.Join(devs, ", ")))
	if r.Kernel.Error != "" {
		p("kernel", r.Kernel.Error)
	}
	switch m := r.Kernel.Masquerade; {
	case !m.Checked:
		p("masquerade", "not checked (the subnet file does not say ip-masq)")
	case m.InPlace:
		p("masquerade", "rules in place")
	default:
		p("masquerade", "rules NOT in place: "+m.Reason)
	}
	tw.Flush()
	if e.Reachable {
		fmt.Fprintf(w, "\nleases in etcd (%d):\n", len(e.Leases))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tKIND")
		for _, l := range e.Leases {
			kind := "lease"
			if l.Reservation {
				kind = "reservation"
			}
			if l.Own {
				kind += " (this host)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", orDash(strings.TrimSpace(l.Subnet+" "+l.IPv6Subnet)), orDash(l.PublicIP), l.BackendType, kind)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nroutes of the agent in the kernel (proto %d) (%d):\n", backend.RouteProtocol, len(r.Kernel.Routes))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tVIA\tDEV")
	for _, rt := range r.Kernel.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", rt.Subnet, orDash(rt.Via), orDash(rt.Dev))
	}
	tw.Flush()
}
