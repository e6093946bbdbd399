package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/netnsguard"
)

// conflist is the CNI network configuration of a lab host: the one that
// dist/10-netagent.conflist ships (netagent-cni chained with portmap),
// with the host's subnet file, status socket and data directories inside
// the lab directory instead of /run and /var/lib, for CNI version
// cniVersion (dist's names 1.1.0; podman 4.3's libcni knows up to 1.0.0).
func conflist(h *lab.Host, statusSocket, cniVersion string) ([]byte, error) {
	list := map[string]any{
		"cniVersion": cniVersion,
		"name":       "netagent",
		"plugins": []any{
			map[string]any{
				"type":         "netagent-cni",
				"subnetFile":   h.SubnetFile(),
				"statusSocket": statusSocket,
				"dataDir":      filepath.Join(h.Dir, "cni"),
				"ipam":         map[string]any{"dataDir": filepath.Join(h.Dir, "ipam")},
				"delegate":     map[string]any{"hairpinMode": true, "isDefaultGateway": true},
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]any{"portMappings": true},
			},
		},
	}
	return json.Marshal(list)
}

// attacher attaches container namespaces to a host through the CNI chain,
// as a container runtime would, with every plugin run inside the host's
// namespace.
type attacher struct {
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

// newAttacher prepares the CNI chain of host h: plugins are looked up in
// binDir, libcni's cache lives in the host's directory.
func newAttacher(h *lab.Host, binDir, statusSocket string) (*attacher, error) {
	b, err := conflist(h, statusSocket, "1.1.0")
	if err != nil {
		return nil, err
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("CNI config of %s: %w", h.Name, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(h.Dir, "cni-cache"), nsExec{ns: h.NS})
	return &attacher{cni: cni, list: list}, nil
}

// add runs the chain's ADD for the container namespace c (interface eth0)
// and returns the container's addresses by family: one of each family the
// host's lease has, as netagent-cni asks host-local for one per range.
func (a *attacher) add(ctx context.Context, c *lab.Container) (map[family]netip.Prefix, error) {
	res, err := a.cni.AddNetworkList(ctx, a.list, &libcni.RuntimeConf{
		ContainerID: c.NS,
		NetNS:       lab.NSPath(c.NS),
		IfName:      "eth0",
	})
	if err != nil {
		return nil, fmt.Errorf("CNI ADD of %s: %w", c.NS, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI ADD of %s: result: %w", c.NS, err)
	}
	addrs := make(map[family]netip.Prefix)
	for _, ip := range r.IPs {
		p, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		p = p.Unmap()
		f := ipv4
		if p.Is6() {
			f = ipv6
		}
		if _, dup := addrs[f]; dup {
			return nil, fmt.Errorf("CNI ADD of %s: more than one %s address in the result", c.NS, f)
		}
		bits, _ := ip.Address.Mask.Size()
		addrs[f] = netip.PrefixFrom(p, bits)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("CNI ADD of %s: no address in the result", c.NS)
	}
	return addrs, nil
}

// nsExec is a libcni plugin executor that runs each plugin inside a lab
// host's namespace, as the host's container runtime would, instead of in
// the lab process's own (the machine's initial) namespace.
type nsExec struct{ ns string }

// ExecPlugin runs the plugin with stdin and environ.
//
// Equivalent to: `ip netns exec NS env ENVIRON... PLUGIN < STDIN`.
func (e nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	cmd.Env = append(environ, netnsguard.EnvRefuse+"=1")
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// A plugin reports its failure as a CNI error object on stdout.
		var cniErr types.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && cniErr.Msg != "" {
			return nil, &cniErr
		}
		return nil, fmt.Errorf("%s in %s: %w: %s", filepath.Base(pluginPath), e.ns, err, bytes.TrimSpace(append(stdout.Bytes(), stderr.Bytes()...)))
	}
	return stdout.Bytes(), nil
}

// FindInPath finds the plugin in paths.
func (nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// Decode decodes a plugin's VERSION answer.
func (nsExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}
