package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/probe"
	"github.com/netagent/netagent/subnet"
)

// configTimeout bounds the etcd requests of `netagent config`.
const configTimeout = 10 * time.Second

// errConfigChangedMeanwhile is returned by `config set` when the key
// changed between its read and its write.
var errConfigChangedMeanwhile = errors.New("the network config in etcd changed while it was being set: nothing written, try again")

const configUsage = `usage: netagent config <check FILE | get | set FILE> [flags]

  check FILE   validate a network config file ("-" for stdin)
  get          print the network config stored in etcd, and whether it is valid
  set FILE     validate FILE, then write it to etcd (nothing is written if
               it does not validate, or if the key changed meanwhile)

All three take --probe-port (default 8473, the agents' default): a backend
port equal to it is refused. An overlay network overlapping a subnet of
this machine's interfaces is a warning (agents refuse it on hosts whose
external interface has that subnet).

get and set take the etcd flags of 'netagent run' (--etcd-endpoints, ...),
or their NETAGENT_* variables. In kube mode (--kube-subnet-mgr, or its
NETAGENT_*/FLANNELD_* variable) the config is the file --net-config-path:
get checks it, set refuses (change the ConfigMap).
`

// validateConfig parses data as the agent will, checks the backend's own
// fields, and checks it against env as the agent does (agent.CheckHost):
// a backend port that is the probe port is refused; an overlay that
// overlaps a subnet of this machine's interfaces is a warning (the command
// may run on another machine than the hosts; the agents refuse it). It
// returns the config and warnings (those, and unknown fields, which the
// agent ignores).
func validateConfig(backends backend.Kinds, data []byte, env agent.HostEnv) (*lease.Config, []string, error) {
	cfg, err := lease.ParseConfig(data)
	if err != nil {
		return nil, nil, err
	}
	if err := backends.Validate(cfg); err != nil {
		return nil, nil, err
	}
	var warnings []string
	for _, err := range agent.CheckHost(cfg, env) {
		if !errors.Is(err, agent.ErrUnderlayOverlap) {
			return nil, nil, err
		}
		warnings = append(warnings, err.Error()+" on this machine; agents whose external interface has this subnet refuse the config")
	}
	for _, f := range lease.UnknownConfigFields(data) {
		warnings = append(warnings, fmt.Sprintf("unknown field %q is ignored (misspelt?)", f))
	}
	return cfg, warnings, nil
}

// localSubnets returns the subnets of this machine's interfaces (loopback
// and link-local aside): where `netagent config` runs on a host, the
// underlay is among them.
func localSubnets() []agent.Connected {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []agent.Connected
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || ip.IsLinkLocalUnicast() || ip.IsLoopback() {
				continue
			}
			ones, _ := ipn.Mask.Size()
			out = append(out, agent.Connected{Iface: ifc.Name, Prefix: netip.PrefixFrom(ip.Unmap(), ones).Masked()})
		}
	}
	return out
}

func runConfig(ctx context.Context, backends backend.Kinds, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, configUsage)
		if len(args) == 0 {
			return usageError{errors.New("config: missing subcommand")}
		}
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("config "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var etcd *etcdCommand
	kube := agent.DefaultOptions().Kube
	probePort := fs.Int("probe-port", probe.DefaultPort, "the agents' --probe-port: a backend port equal to it is refused (0: not probing)")
	wantFile := false
	switch sub {
	case "check":
		wantFile = true
	case "get":
		etcd = addEtcdCommand(fs)
		configKubeFlags(fs, &kube)
	case "set":
		wantFile = true
		etcd = addEtcdCommand(fs)
		configKubeFlags(fs, &kube)
	default:
		fmt.Fprint(stderr, configUsage)
		return usageError{fmt.Errorf("config: unknown subcommand %q", sub)}
	}
	// Flags may come before or after FILE.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	var file string
	switch {
	case wantFile && len(positional) != 1:
		return usageError{fmt.Errorf("config %s: want one FILE argument", sub)}
	case wantFile:
		file = positional[0]
	case len(positional) > 0:
		return usageError{fmt.Errorf("config %s: unexpected argument %q", sub, positional[0])}
	}
	if etcd != nil {
		if err := etcd.finish(fs, getenv); err != nil {
			return usageError{err}
		}
	}
	if *probePort < 0 || *probePort > 65535 {
		return usageError{fmt.Errorf("config %s: --probe-port: %d is not a UDP port", sub, *probePort)}
	}
	env := agent.HostEnv{ProbePort: *probePort, Underlay: localSubnets()}
	if kube.Enabled {
		// The config is a file, not in etcd: get checks it, set refuses.
		if sub == "set" {
			return fmt.Errorf("config set: %w", errKubeConfigSet)
		}
		sub, file = "check", kube.NetConfigPath
	}
	switch sub {
	case "check":
		data, err := readConfigFile(file, stdin)
		if err != nil {
			return err
		}
		cfg, warnings, err := validateConfig(backends, data, env)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		printWarnings(stderr, file, warnings)
		fmt.Fprintf(stdout, "%s: valid: %s\n", file, cfg)
		return nil
	case "get":
		return configGet(ctx, backends, etcd.opts, env, stdout, stderr)
	default:
		data, err := readConfigFile(file, stdin)
		if err != nil {
			return err
		}
		return configSet(ctx, backends, etcd.opts, env, file, data, stdout, stderr)
	}
}

// errKubeConfigSet is `config set` in kube mode.
var errKubeConfigSet = errors.New("kube mode (--kube-subnet-mgr): the network config is the file --net-config-path, from the ConfigMap, not in etcd: change the ConfigMap (check the new file with 'netagent config check FILE') and restart the agents")

// configKubeFlags defines the kube-mode flags of `config get` and `set`:
// in kube mode get checks the --net-config-path file and set refuses.
func configKubeFlags(fs *flag.FlagSet, k *agent.KubeOptions) {
	fs.BoolVar(&k.Enabled, "kube-subnet-mgr", false, "kube mode: the network config is the --net-config-path file, not in etcd")
	fs.StringVar(&k.NetConfigPath, "net-config-path", k.NetConfigPath, "the network config file in kube mode")
}

func readConfigFile(file string, stdin io.Reader) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(io.LimitReader(stdin, 1<<20))
	}
	return os.ReadFile(file)
}

func printWarnings(w io.Writer, what string, warnings []string) {
	for _, warn := range warnings {
		fmt.Fprintf(w, "%s: warning: %s\n", what, warn)
	}
}

// configGet prints the stored config as it is, then says on stderr whether
// it is valid; an invalid stored config is an error (exit status 1).
func configGet(ctx context.Context, backends backend.Kinds, eo agent.EtcdOptions, env agent.HostEnv, stdout, stderr io.Writer) error {
	cli, err := agent.NewEtcdClient(eo)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, configTimeout)
	defer cancel()
	key := subnet.NewRegistry(cli, eo.Prefix, nil).ConfigKey()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("%w at %s", subnet.ErrNoConfig, key)
	}
	data := resp.Kvs[0].Value
	stdout.Write(data)
	if !bytes.HasSuffix(data, []byte("\n")) {
		fmt.Fprintln(stdout)
	}
	cfg, warnings, err := validateConfig(backends, data, env)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	printWarnings(stderr, key, warnings)
	fmt.Fprintf(stderr, "%s: valid: %s\n", key, cfg)
	return nil
}

// configSet validates data and writes it to the config key in one
// transaction that succeeds only if the key did not change since it was
// read, so that two admins do not overwrite each other unknowingly.
func configSet(ctx context.Context, backends backend.Kinds, eo agent.EtcdOptions, env agent.HostEnv, file string, data []byte, stdout, stderr io.Writer) error {
	cfg, warnings, err := validateConfig(backends, data, env)
	if err != nil {
		return fmt.Errorf("%s: %w (nothing written)", file, err)
	}
	printWarnings(stderr, file, warnings)
	cli, err := agent.NewEtcdClient(eo)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, configTimeout)
	defer cancel()
	key := subnet.NewRegistry(cli, eo.Prefix, nil).ConfigKey()
	cur, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	var rev int64 // ModRevision 0: the key does not exist
	if len(cur.Kvs) > 0 {
		rev = cur.Kvs[0].ModRevision
		if bytes.Equal(cur.Kvs[0].Value, data) {
			fmt.Fprintf(stdout, "%s: unchanged: %s\n", key, cfg)
			return nil
		}
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(data))).
		Commit()
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if !resp.Succeeded {
		return errConfigChangedMeanwhile
	}
	fmt.Fprintf(stdout, "%s: written: %s\n", key, cfg)
	return nil
}
