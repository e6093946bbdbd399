package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/subnetfile"
)

// The CNI path of the tests: netagent-cni and the reference plugins, built
// on first use into binDir, which TestMain creates and removes.
var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
)

// startNetns is the inode of the network namespace the test process started
// in: plugins are never run there.
var startNetns uint64

// netnsIno returns the inode of a network namespace file.
func netnsIno(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netagent-cni-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	binDir = dir
	defer os.RemoveAll(dir)
	if startNetns, err = netnsIno("/proc/self/ns/net"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	m.Run()
}

// cniPath builds the plugins once and returns the directory holding them.
func cniPath(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		builds := [][]string{
			{"build", "-o", binDir + "/", "./netagent-cni"},
			{"build", "-o", binDir + "/",
				"github.com/containernetworking/plugins/plugins/main/bridge",
				"github.com/containernetworking/plugins/plugins/ipam/host-local",
				"github.com/containernetworking/plugins/plugins/main/loopback",
				"github.com/containernetworking/plugins/plugins/meta/portmap"},
		}
		for _, args := range builds {
			out, err := exec.Command("go", args...).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and runs the CNI plugins in them")
	}
}

// newNS creates a network namespace (nstest.NewNS), removed when the test
// ends, and opens it as the CNI libraries take it.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	h, err := ns.GetNS(nstest.NewNS(t, "cni").Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// env is one test host: a network namespace where cni0 lives, a subnet
// file, the plugin's data directory, host-local's and libcni's.
type env struct {
	t          *testing.T
	host       ns.NetNS
	dir        string
	subnetFile string
	dataDir    string
	ipamDir    string
	socket     string
	cni        *libcni.CNIConfig
}

// leaseInfo is the test's lease: FLANNEL_NETWORK=10.5.0.0/16,
// FLANNEL_SUBNET=10.5.58.1/24, MTU 1450, the agent masquerading.
var leaseInfo = subnetfile.Info{
	Network: netip.MustParsePrefix("10.5.0.0/16"),
	Subnet:  netip.MustParsePrefix("10.5.58.0/24"),
	MTU:     1450,
	IPMasq:  true,
}

func newEnv(t *testing.T) *env {
	t.Helper()
	needRoot(t)
	path := cniPath(t)
	dir := t.TempDir()
	e := &env{
		t:          t,
		host:       newNS(t),
		dir:        dir,
		subnetFile: filepath.Join(dir, "run", "subnet.env"),
		dataDir:    filepath.Join(dir, "data"),
		ipamDir:    filepath.Join(dir, "ipam"),
		socket:     filepath.Join(dir, "na.sock"),
	}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{path}, filepath.Join(dir, "libcni"), nil)
	e.writeSubnetFile(leaseInfo)
	return e
}

func (e *env) writeSubnetFile(info subnetfile.Info) {
	e.t.Helper()
	if err := subnetfile.Write(e.subnetFile, info); err != nil {
		e.t.Fatal(err)
	}
}

// pluginConf returns the netagent-cni entry of a conflist, pointing at the
// test's files.
func (e *env) pluginConf(delegate string) string {
	if delegate == "" {
		delegate = "{}"
	}
	return fmt.Sprintf(`{"type":"netagent-cni","subnetFile":%q,"dataDir":%q,"statusSocket":%q,"ipam":{"dataDir":%q},"delegate":%s}`,
		e.subnetFile, e.dataDir, e.socket, e.ipamDir, delegate)
}

// conflist returns the plugin chained with portmap, as runtimes load it.
func (e *env) conflist(version, delegate string) *libcni.NetworkConfigList {
	e.t.Helper()
	data := fmt.Sprintf(`{"cniVersion":%q,"name":"testnet","plugins":[%s,{"type":"portmap","capabilities":{"portMappings":true}}]}`,
		version, e.pluginConf(delegate))
	list, err := libcni.NetworkConfFromBytes([]byte(data))
	if err != nil {
		e.t.Fatal(err)
	}
	return list
}

// inHost runs fn on a thread in the host namespace: the plugins it starts
// run there. It refuses to run in the namespace the test started in.
func (e *env) inHost(fn func(ctx context.Context) error) error {
	e.t.Helper()
	return e.host.Do(func(ns.NetNS) error {
		if ino, err := netnsIno("/proc/thread-self/ns/net"); err != nil || ino == startNetns {
			return fmt.Errorf("refusing to run the plugins: not in the test's host namespace (%v)", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return fn(ctx)
	})
}

// container is one container's namespace and attachment.
type container struct {
	id string
	ns ns.NetNS
}

func (e *env) newContainer(id string) container {
	return container{id: id, ns: newNS(e.t)}
}

func (c container) rt(capArgs map[string]any) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: c.id, NetNS: c.ns.Path(), IfName: "eth0", CapabilityArgs: capArgs}
}

func (e *env) add(list *libcni.NetworkConfigList, c container) (types.Result, error) {
	var res types.Result
	err := e.inHost(func(ctx context.Context) (err error) {
		res, err = e.cni.AddNetworkList(ctx, list, c.rt(nil))
		return err
	})
	return res, err
}

func (e *env) mustAdd(list *libcni.NetworkConfigList, c container) *types100.Result {
	e.t.Helper()
	res, err := e.add(list, c)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", c.id, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) check(list *libcni.NetworkConfigList, c container) error {
	return e.inHost(func(ctx context.Context) error { return e.cni.CheckNetworkList(ctx, list, c.rt(nil)) })
}

func (e *env) del(list *libcni.NetworkConfigList, c container) error {
	return e.inHost(func(ctx context.Context) error { return e.cni.DelNetworkList(ctx, list, c.rt(nil)) })
}

func (e *env) status(list *libcni.NetworkConfigList) error {
	return e.inHost(func(ctx context.Context) error { return e.cni.GetStatusNetworkList(ctx, list) })
}

// cacheFile returns the path of an attachment's cached config.
func (e *env) cacheFile(c container) string {
	return filepath.Join(e.dataDir, c.id+"-eth0")
}

// reservations returns host-local's reservations of network testnet: the
// reserved address for each container ID.
func (e *env) reservations() map[string]string {
	e.t.Helper()
	dir := filepath.Join(e.ipamDir, "testnet")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, ent := range entries {
		if _, err := netip.ParseAddr(ent.Name()); err != nil {
			continue // last_reserved_ip.0, lock
		}
		data, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			e.t.Fatal(err)
		}
		id, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
		out[strings.TrimSpace(id)] = ent.Name()
	}
	return out
}

// containerIP returns the address of the container's interface from an ADD
// result.
func containerIP(t *testing.T, r *types100.Result) netip.Prefix {
	t.Helper()
	for _, ip := range r.IPs {
		if ip.Interface != nil && r.Interfaces[*ip.Interface].Sandbox != "" {
			a, _ := netip.AddrFromSlice(ip.Address.IP)
			ones, _ := ip.Address.Mask.Size()
			return netip.PrefixFrom(a.Unmap(), ones)
		}
	}
	t.Fatalf("no container address in %v", r)
	return netip.Prefix{}
}

// link returns the container's eth0, its IPv4 addresses and routes, or nil
// when it has no eth0.
func (c container) link(t *testing.T) (netlink.Link, []netlink.Addr, []netlink.Route) {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(c.ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil, nil
		}
		t.Fatal(err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	routes, err := h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	return l, addrs, routes
}

// serveReadyz answers GET /readyz with code on a unix socket at path, as
// the agent does.
func serveReadyz(t *testing.T, path string, code int) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// cniCode returns the CNI error code of err, or 0.
func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}
