package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/netagent/netagent/agent"
)

// envPrefix is the prefix of the environment variables that set flags:
// --etcd-endpoints is NETAGENT_ETCD_ENDPOINTS. flanneld's FLANNELD_* names
// and the variables of flanneld's packages (flannelPackagingEnv,
// FLANNEL_OPTIONS) are read too, so that an existing EnvironmentFile keeps
// working. Precedence, first set wins: a flag on the command line,
// NETAGENT_*, FLANNEL_OPTIONS, the packaging variables, FLANNELD_*.
const (
	envPrefix        = "NETAGENT_"
	flannelEnvPrefix = "FLANNELD_"
)

// envNotFlags are NETAGENT_* variables that are not flags but are known.
var envNotFlags = map[string]bool{
	"NETAGENT_REFUSE_INITIAL_NETNS": true,
	// NETAGENT_OPTIONS holds extra flags for ExecStart in
	// dist/netagent.service (flanneld's FLANNEL_OPTIONS).
	"NETAGENT_OPTIONS": true,
}

// stringList is a repeatable string flag; a comma-free value per use.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// addrFlag is an optional IP address flag.
type addrFlag struct{ addr *netip.Addr }

func (a addrFlag) String() string {
	if a.addr == nil || !a.addr.IsValid() {
		return ""
	}
	return a.addr.String()
}

func (a addrFlag) Set(v string) error {
	if v == "" {
		*a.addr = netip.Addr{}
		return nil
	}
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return fmt.Errorf("not an IP address: %q", v)
	}
	*a.addr = ip.Unmap()
	return nil
}

// negBool is a boolean flag stored negated: --dataplane-repair=false sets
// Options.NoRepair.
type negBool struct{ b *bool }

func (n negBool) IsBoolFlag() bool { return true }

func (n negBool) String() string {
	if n.b == nil {
		return "true"
	}
	return strconv.FormatBool(!*n.b)
}

func (n negBool) Set(v string) error {
	x, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("want true or false: %q", v)
	}
	*n.b = !x
	return nil
}

// unitOrDuration is a duration flag that, as flanneld's, takes a whole
// number of units (minutes for --subnet-lease-renew-margin, seconds for
// --iptables-resync), and also a Go duration such as "90s".
type unitOrDuration struct {
	d    *time.Duration
	unit time.Duration
}

func (u unitOrDuration) String() string {
	if u.d == nil {
		return ""
	}
	return u.d.String()
}

func (u unitOrDuration) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		*u.d = time.Duration(n) * u.unit
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want a whole number of %s or a duration such as 90s: %q", map[time.Duration]string{time.Minute: "minutes", time.Second: "seconds"}[u.unit], v)
	}
	*u.d = d
	return nil
}

const runUsage = `usage: netagent run [flags]   (or: netagent --flag ..., as flanneld)

Run the agent. Each flag can also be set as NETAGENT_<FLAG> (--etcd-prefix:
NETAGENT_ETCD_PREFIX) or flanneld's FLANNELD_<FLAG>; flanneld's packaging
variables FLANNEL_ETCD_ENDPOINTS, FLANNEL_ETCD_PREFIX and FLANNEL_OPTIONS
are read too. A flag wins over the environment.

With --kube-subnet-mgr the leases are kept on the Kubernetes API as
flanneld's kube subnet manager keeps them (this host's Node from NODE_NAME
or --node-name, the network config from --net-config-path); the etcd flags
are then refused.

flags:
`

// runFlags builds the flag set of `netagent run` over o. The names follow
// flanneld's for everything flanneld has.
func runFlags(o *agent.Options, passwordFile *string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), runUsage)
		fs.PrintDefaults()
	}
	etcdFlags(fs, &o.Etcd, passwordFile)
	kubeFlags(fs, &o.Kube)
	fs.Var((*stringList)(&o.Iface.Ifaces), "iface", "interface name or IP address to use (repeatable; first found wins)")
	fs.Var((*stringList)(&o.Iface.IfaceRegex), "iface-regex", "regex matched against interface addresses, then names (repeatable)")
	fs.Var(addrFlag{&o.Iface.CanReach}, "iface-can-reach", "use the interface the kernel would use to reach this address")
	fs.Var(addrFlag{&o.Iface.PublicIP}, "public-ip", "IPv4 address published to other hosts (default: the interface's)")
	fs.Var(addrFlag{&o.Iface.PublicIPv6}, "public-ipv6", "IPv6 address published to other hosts (default: the interface's)")
	fs.StringVar(&o.SubnetFile, "subnet-file", o.SubnetFile, "subnet file to write")
	fs.StringVar(&o.DockerOptsFile, "docker-opts-file", o.DockerOptsFile, `Docker options file to write ("" for none)`)
	fs.BoolVar(&o.IPMasq, "ip-masq", false, "masquerade traffic leaving the overlay")
	fs.BoolVar(&o.NFTables, "nftables", false, "use nftables instead of iptables for masquerade and forward rules")
	fs.Var(unitOrDuration{&o.RenewMargin, time.Minute}, "subnet-lease-renew-margin", "renew the lease this long before it expires (minutes, or a duration)")
	fs.DurationVar(&o.LeaseTTL, "subnet-lease-ttl", o.LeaseTTL, "TTL of this host's lease in etcd")
	fs.DurationVar(&o.ResyncInterval, "resync-interval", o.ResyncInterval, "period of the full data-plane and firewall resync")
	fs.Var(unitOrDuration{&o.MasqResync, time.Second}, "iptables-resync", "check and repair the masquerade rules this often (seconds, or a duration)")
	fs.StringVar(&o.StatusSocket, "status-socket", o.StatusSocket, `unix socket answering netagent status ("" for none; default for another --etcd-prefix: /run/netagent/netagent-<id>.sock)`)
	fs.Var(addrFlag{&o.HealthzIP}, "healthz-ip", "address serving /healthz, /readyz and /metrics")
	fs.IntVar(&o.HealthzPort, "healthz-port", 0, "port serving /healthz, /readyz and /metrics (0: none)")
	fs.BoolVar(&o.Probe, "probe", o.Probe, "probe every peer through the overlay and report whether it is reachable, and why not")
	fs.DurationVar(&o.ProbeInterval, "probe-interval", o.ProbeInterval, "how often each peer is probed (stretched when peers×2/--probe-rate is longer)")
	fs.Float64Var(&o.ProbeRate, "probe-rate", o.ProbeRate, "at most this many probe datagrams a second from this host, all peers and retries together")
	fs.IntVar(&o.ProbePort, "probe-port", o.ProbePort, "UDP port of the probe responder, the same on every host (default for another --etcd-prefix: derived from it, in 8474-9473)")
	fs.StringVar(&o.TxCsumOffload, "vxlan-tx-csum-offload", o.TxCsumOffload, "TX checksum offload of the vxlan device: auto (leave it, and try it off with --vxlan-auto-csum-offload), on or off")
	fs.BoolVar(&o.AutoCsumOffload, "vxlan-auto-csum-offload", o.AutoCsumOffload, "turn TX checksum offload off on trial when peers answer on their public IP but not through the overlay; keep it off if that helps")
	fs.StringVar(&o.WireGuardImpl, "wireguard-impl", o.WireGuardImpl, "WireGuard implementation of the wireguard backend: auto (the kernel's if it can create the device, else userspace), kernel or userspace")
	fs.StringVar(&o.WireGuardSocketDir, "wireguard-socket-dir", o.WireGuardSocketDir, "directory of the userspace WireGuard devices' UAPI sockets, where wg finds them")
	fs.Var(negBool{&o.NoRepair}, "dataplane-repair", "repair kernel entries found missing or wrong (false: report them only, for debugging)")
	fs.Var(memoryLimit{&o.MemoryLimit}, "memory-limit", "the Go runtime's soft memory limit: a size (48MiB) or off (default: 21MiB, raised with the live heap); GOMEMLIMIT, when set, replaces the default")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", "text", "text or json")
	return fs
}

// kubeFlags defines the flags of kube mode, flanneld's.
func kubeFlags(fs *flag.FlagSet, k *agent.KubeOptions) {
	fs.BoolVar(&k.Enabled, "kube-subnet-mgr", false, "keep the leases on the Kubernetes API (the Node's pod CIDR and annotations) instead of etcd")
	fs.StringVar(&k.APIURL, "kube-api-url", "", "API server URL (default: from --kubeconfig-file, else the in-cluster service account)")
	fs.StringVar(&k.Kubeconfig, "kubeconfig-file", "", "kubeconfig file (default: the in-cluster service account)")
	fs.StringVar(&k.AnnotationPrefix, "kube-annotation-prefix", k.AnnotationPrefix, "prefix of the Node annotations that publish the lease")
	fs.StringVar(&k.NetConfigPath, "net-config-path", k.NetConfigPath, "network config file in kube mode (net-conf.json, from a ConfigMap)")
	fs.StringVar(&k.NodeName, "node-name", "", "this host's Node in kube mode (default: $NODE_NAME)")
	fs.BoolVar(&k.SetNodeNetworkUnavailable, "set-node-network-unavailable", k.SetNodeNetworkUnavailable, "in kube mode, set the Node's NetworkUnavailable condition false once per start")
}

// Flags of one store only: given with the other store's mode, they are
// refused, as they would be silently ignored.
var (
	etcdOnlyFlags = []string{"etcd-endpoints", "etcd-prefix", "etcd-certfile", "etcd-keyfile", "etcd-cafile",
		"etcd-username", "etcd-password", "etcd-password-file", "subnet-lease-ttl"}
	kubeOnlyFlags = []string{"kube-api-url", "kubeconfig-file", "kube-annotation-prefix", "net-config-path", "node-name",
		"set-node-network-unavailable"}
)

// nodeNameEnv is flanneld's variable naming this host's Node, set from the
// pod's spec.nodeName in flannel's DaemonSet.
const nodeNameEnv = "NODE_NAME"

// checkStoreFlags refuses the flags of the store not in use (given on the
// command line or in NETAGENT_*/FLANNELD_* variables), naming them, and
// fills the node name from NODE_NAME in kube mode.
func checkStoreFlags(o *agent.Options, given map[string]bool, getenv func(string) string) error {
	unused, mode := etcdOnlyFlags, "kube mode (--kube-subnet-mgr)"
	if !o.Kube.Enabled {
		unused, mode = kubeOnlyFlags, "etcd mode (no --kube-subnet-mgr)"
	}
	var errs []error
	for _, name := range unused {
		if given[name] {
			errs = append(errs, fmt.Errorf("--%s is not used in %s", name, mode))
		}
	}
	if o.Kube.Enabled && o.Kube.NodeName == "" {
		o.Kube.NodeName = getenv(nodeNameEnv)
	}
	return errors.Join(errs...)
}

// etcdFlags defines the flags that say how to reach etcd, shared by
// `netagent run`, `status` and `config`.
func etcdFlags(fs *flag.FlagSet, o *agent.EtcdOptions, passwordFile *string) {
	fs.Func("etcd-endpoints", "comma-separated etcd endpoints (default http://127.0.0.1:2379)", func(v string) error {
		o.Endpoints = nil
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				o.Endpoints = append(o.Endpoints, e)
			}
		}
		return nil
	})
	fs.StringVar(&o.Prefix, "etcd-prefix", o.Prefix, "etcd prefix of the network config and leases")
	fs.StringVar(&o.CertFile, "etcd-certfile", "", "client certificate for etcd (TLS)")
	fs.StringVar(&o.KeyFile, "etcd-keyfile", "", "client key for etcd (TLS)")
	fs.StringVar(&o.CAFile, "etcd-cafile", "", "CA bundle that signs etcd's server certificate")
	fs.StringVar(&o.Username, "etcd-username", "", "etcd user name")
	fs.StringVar(&o.Password, "etcd-password", "", "etcd password (prefer --etcd-password-file)")
	fs.StringVar(passwordFile, "etcd-password-file", "", "file holding the etcd password")
	fs.DurationVar(&o.DialTimeout, "etcd-dial-timeout", o.DialTimeout, "time a connection to an etcd member is given to be set up before it is dialled again")
	fs.DurationVar(&o.KeepAliveTimeout, "etcd-keepalive-timeout", o.KeepAliveTimeout, "time a keepalive ping to an etcd member is given to be answered before the connection is dropped")
}

// parseRun parses `netagent run` arguments over defaults, filling unset flags
// from the environment. Warnings about the environment are returned for the
// caller to log once a logger exists.
func parseRun(args []string, getenv func(string) string, environ []string, out io.Writer) (*agent.Options, []string, error) {
	o := agent.DefaultOptions()
	var passwordFile string
	fs := runFlags(o, &passwordFile, out)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	flannelOpts, warnings, err := parseFlannelOptions(fs, getenv(flannelOptionsEnv))
	if err != nil {
		return nil, nil, err
	}
	if err := fromEnv(fs, getenv, flannelOpts); err != nil {
		return nil, nil, err
	}
	given := explicitFlags(fs, getenv)
	if err := checkStoreFlags(o, given, getenv); err != nil {
		return nil, nil, err
	}
	instanceDefaults(o, given)
	switch {
	case given["memory-limit"]:
		o.MemoryLimitFloor = false
	case getenv("GOMEMLIMIT") != "":
		// The runtime has read it before main.
		o.MemoryLimit, o.MemoryLimitFloor = 0, false
	}
	warnings = append(warnings, unknownEnv(fs, environ)...)
	if err := readPasswordFile(&o.Etcd, passwordFile); err != nil {
		return nil, nil, err
	}
	for _, re := range o.Iface.IfaceRegex {
		if _, err := regexp.Compile(re); err != nil {
			return nil, nil, fmt.Errorf("--iface-regex %q: %v", re, err)
		}
	}
	if err := o.Validate(); err != nil {
		return nil, nil, err
	}
	return o, warnings, nil
}

// fromEnv sets each flag of fs not given on the command line from the
// environment: its NETAGENT_* variable, else its values in FLANNEL_OPTIONS
// (flannelOpts, from parseFlannelOptions; nil for commands that do not
// read it), else its packaging variable (flannelPackagingEnv), else its
// FLANNELD_* variable. The first source that sets it wins.
func fromEnv(fs *flag.FlagSet, getenv func(string) string, flannelOpts map[string][]string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		if v := getenv(envName(envPrefix, f.Name)); v != "" {
			err = setFromEnv(f, envName(envPrefix, f.Name), v)
			return
		}
		if vs := flannelOpts[f.Name]; len(vs) > 0 {
			for _, v := range vs {
				if serr := f.Value.Set(v); serr != nil {
					err = fmt.Errorf("invalid value for -%s in %s: %v", f.Name, flannelOptionsEnv, serr)
					return
				}
			}
			return
		}
		names := append(append([]string(nil), flannelPackagingEnv[f.Name]...), envName(flannelEnvPrefix, f.Name))
		for _, name := range names {
			if v := getenv(name); v != "" {
				err = setFromEnv(f, name, v)
				return
			}
		}
	})
	return err
}

func setFromEnv(f *flag.Flag, name, v string) error {
	if err := setList(f, v); err != nil {
		return fmt.Errorf("invalid value for %s: %v", name, err)
	}
	return nil
}

// explicitFlags are the flags of fs given on the command line or by an
// environment variable (see fromEnv).
func explicitFlags(fs *flag.FlagSet, getenv func(string) string) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if getenv(envName(envPrefix, f.Name)) != "" || getenv(envName(flannelEnvPrefix, f.Name)) != "" {
			set[f.Name] = true
		}
	})
	return set
}

// instanceDefaults sets the options that are per instance and were not
// given from the instance's key (its etcd prefix, or annotation prefix in
// kube mode): the status socket and the probe port
// (docs/compatibility.md §11).
func instanceDefaults(o *agent.Options, given map[string]bool) {
	if !given["status-socket"] {
		o.StatusSocket = agent.StatusSocketFor(o.InstanceKey())
	}
	if !given["probe-port"] {
		o.ProbePort = agent.ProbePortFor(o.InstanceKey())
	}
}

// readPasswordFile sets o.Password from --etcd-password-file, if given.
func readPasswordFile(o *agent.EtcdOptions, passwordFile string) error {
	if passwordFile == "" {
		return nil
	}
	if o.Password != "" {
		return errors.New("--etcd-password and --etcd-password-file are both set")
	}
	b, err := os.ReadFile(passwordFile)
	if err != nil {
		return fmt.Errorf("--etcd-password-file: %w", err)
	}
	o.Password = strings.TrimRight(string(b), "\r\n")
	return nil
}

// setList sets f from an environment value; repeatable flags take a
// comma-separated list there.
func setList(f *flag.Flag, v string) error {
	if _, ok := f.Value.(*stringList); ok {
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				if err := f.Value.Set(item); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return f.Value.Set(v)
}

func envName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// unknownEnv lists NETAGENT_* variables that name no flag: most likely typos.
func unknownEnv(fs *flag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(envPrefix, f.Name)] = true })
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) && !known[name] && !envNotFlags[name] {
			warnings = append(warnings, fmt.Sprintf("unknown environment variable %s is ignored", name))
		}
	}
	sort.Strings(warnings)
	return warnings
}

// etcdCommand is the etcd part of a command that reads or writes the
// cluster store without running the agent (`status`, `config`): the same
// flags and NETAGENT_* variables as `netagent run`.
type etcdCommand struct {
	opts         agent.EtcdOptions
	passwordFile string
}

// addEtcdCommand defines the etcd flags on fs.
func addEtcdCommand(fs *flag.FlagSet) *etcdCommand {
	c := &etcdCommand{opts: agent.DefaultOptions().Etcd}
	etcdFlags(fs, &c.opts, &c.passwordFile)
	return c
}

// finish completes the parsed flags of fs from the environment and checks
// the etcd options.
func (c *etcdCommand) finish(fs *flag.FlagSet, getenv func(string) string) error {
	if err := fromEnv(fs, getenv, nil); err != nil {
		return err
	}
	if err := readPasswordFile(&c.opts, c.passwordFile); err != nil {
		return err
	}
	o := agent.DefaultOptions()
	o.Etcd = c.opts
	return o.Validate()
}
