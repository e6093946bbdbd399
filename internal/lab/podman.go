package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// podmanBin is Debian's podman (4.3, whose CNI backend the lab uses).
const podmanBin = "/usr/bin/podman"

// PodmanRuntime is the OCI runtime the lab's podman runs containers
// with. runc, not crun: crun 1.8 refuses a machine whose cgroups are in
// hybrid mode (v1 controllers with a v2 tree) while runc works on every
// layout, and Debian's podman depends on one of the two.
const PodmanRuntime = "/usr/bin/runc"

// podmanRunRoot holds the run roots of the lab's podmans, one directory
// per host namespace.
const podmanRunRoot = "/run/netagent-podman"

// ErrNoPodman is returned by NewPodman when podman or its OCI runtime is
// missing.
var ErrNoPodman = errors.New("lab: Podman needs " + podmanBin + " and " + PodmanRuntime + " (Debian packages podman and runc)")

// Podman runs a lab host's containers with podman and its CNI backend:
// the host's network is a conflist in Dir/net.d, whose plugins podman
// runs from PluginDirs. Podman has no daemon: every command is started
// in the host's network namespace (with nsenter, keeping the cgroup
// mounts) and in a mount namespace of the host's podman (see
// makeMountNS), with every path of its own under Dir (storage, run and
// tmp directories, locks as files, the network configuration, libcni's
// cache), so that the podmans of several hosts never see each other's
// state.
type Podman struct {
	Host *Host
	// Dir holds podman's state and configuration.
	Dir string
	// Network is the name of the conflist, which containers join.
	Network string
	// RunDir is podman's run root: a short path (podman refuses one
	// longer than 50 bytes, for conmon's sockets), outside Dir.
	RunDir string

	l            *Lab
	cgroupParent string
	env          []string
}

// NewPodman prepares podman on host h: the conflist (its "name" is the
// network's) in a network directory of its own, a containers.conf
// pointing podman at pluginDirs, and the lab's busybox image
// (BusyboxImage). Close removes its containers, mounts, cgroups and
// directory.
func (l *Lab) NewPodman(ctx context.Context, h *Host, pluginDirs []string, conflist []byte) (*Podman, error) {
	for _, p := range []string{podmanBin, PodmanRuntime} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoPodman, err)
		}
	}
	if err := checkStatic(BusyboxPath); err != nil {
		return nil, err
	}
	var list struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(conflist, &list); err != nil || list.Name == "" {
		return nil, fmt.Errorf("lab: podman's conflist has no name: %v", err)
	}
	p := &Podman{
		Host: h, Dir: filepath.Join(h.Dir, "podman"), Network: list.Name, RunDir: filepath.Join(podmanRunRoot, h.NS),
		l: l, cgroupParent: "/" + h.NS + "-podman",
	}
	p.env = []string{"CONTAINERS_CONF=" + p.path("containers.conf"), "CONTAINERS_STORAGE_CONF=" + p.path("storage.conf")}
	if err := p.writeConfig(pluginDirs, conflist); err != nil {
		return nil, err
	}
	if err := l.onClose(p.close); err != nil {
		return nil, errors.Join(err, os.RemoveAll(p.Dir), os.RemoveAll(p.RunDir))
	}
	if err := p.makeMountNS(ctx); err != nil {
		return nil, err
	}
	// podman import reads the tar stream itself: it needs no network
	// namespace.
	if err := importBusybox(ctx, p.env, append(p.argv(), "import", "-", BusyboxImage)...); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Podman) path(name string) string { return filepath.Join(p.Dir, name) }

// writeConfig writes containers.conf, storage.conf and the conflist.
//
// In containers.conf, locks are files in the tmp directory (not the
// machine-wide /dev/shm/libpod_lock, which a podman with a fresh state
// would reset under another's feet), and the default ulimits stay within
// the lab process's (podman's defaults would need CAP_SYS_RESOURCE).
func (p *Podman) writeConfig(pluginDirs []string, conflist []byte) error {
	for _, d := range []string{p.path("net.d"), p.RunDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	dirs, _ := json.Marshal(pluginDirs)
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
lock_type = "file"
events_logger = "file"
cgroup_manager = "cgroupfs"
tmp_dir = %q
[network]
network_backend = "cni"
cni_plugin_dirs = %s
network_config_dir = %q
default_network = %q
`, p.path("tmp"), dirs, p.path("net.d"), p.Network)
	storage := fmt.Sprintf(`[storage]
driver = "vfs"
graphroot = %q
runroot = %q
`, p.path("root"), p.RunDir)
	for name, data := range map[string][]byte{
		"containers.conf": []byte(conf),
		"storage.conf":    []byte(storage),
		filepath.Join("net.d", p.Network+".conflist"): conflist,
	} {
		if err := os.WriteFile(p.path(name), data, 0o644); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	return nil
}

// globalFlags repeat containers.conf's paths on podman's command line,
// which also reaches the `podman container cleanup` that conmon runs
// when a container exits.
func (p *Podman) globalFlags() []string {
	return []string{
		"--root", p.path("root"), "--runroot", p.RunDir, "--tmpdir", p.path("tmp"),
		"--storage-driver", "vfs", "--network-backend", "cni", "--network-config-dir", p.path("net.d"),
		"--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", PodmanRuntime,
	}
}

// cniCacheDir is libcni's cache, where podman 4.3 keeps each
// container's CNI result and cannot be told to keep it elsewhere.
const cniCacheDir = "/var/lib/cni"

// makeMountNS makes the mount namespace every podman command of the host
// runs in: a slave of the machine's (mounts made there, such as the
// namespace files podman binds in /run/netns for its containers, stay
// there), where the host's own DIR/cni-cache is bound over
// /var/lib/cni. The namespace is kept by a bind mount of it on
// DIR/mnt/ns, on a private mount of DIR/mnt (unshare refuses a shared
// one); Close unmounts both, which ends the namespace.
//
// Equivalent to:
//
//	mount --bind DIR/mnt DIR/mnt; mount --make-private DIR/mnt; touch DIR/mnt/ns
//	unshare --mount=DIR/mnt/ns --propagation slave mount --bind DIR/cni-cache /var/lib/cni
func (p *Podman) makeMountNS(ctx context.Context) error {
	mnt := p.path("mnt")
	for _, d := range []string{mnt, p.path("cni-cache"), cniCacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	if err := syscall.Mount(mnt, mnt, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("lab: mount --bind %s: %w", mnt, err)
	}
	if err := syscall.Mount("", mnt, "", syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("lab: mount --make-private %s: %w", mnt, err)
	}
	if err := os.WriteFile(p.mountNS(), nil, 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	argv := []string{"unshare", "--mount=" + p.mountNS(), "--propagation", "slave", "mount", "--bind", p.path("cni-cache"), cniCacheDir}
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("lab: %s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// podmanNetnsDir is where podman makes its containers' namespace files.
const podmanNetnsDir = "/run/netns"

// ownNetnsFiles returns the namespace files that podman has bound in
// /run/netns inside its mount namespace: mount points there that the
// machine's mount table lacks (the lab's own namespaces appear in both).
func (p *Podman) ownNetnsFiles(ctx context.Context) ([]string, error) {
	if _, err := os.Stat(p.mountNS()); err != nil {
		return nil, nil // never made
	}
	inside, err := exec.CommandContext(ctx, "nsenter", "--mount="+p.mountNS(), "cat", "/proc/self/mountinfo").Output()
	if err != nil {
		return nil, fmt.Errorf("lab: podman's mount table: %w", err)
	}
	outside, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	machine := mountPoints(outside, podmanNetnsDir)
	var own []string
	for _, m := range mountPoints(inside, podmanNetnsDir) {
		if m != podmanNetnsDir && !slices.Contains(machine, m) {
			own = append(own, m)
		}
	}
	return own, nil
}

// mountNS is the file that keeps the host's podman mount namespace.
func (p *Podman) mountNS() string { return p.path("mnt/ns") }

// argv is podman's command line, in the host's mount namespace, with the
// global flags.
func (p *Podman) argv() []string {
	return append([]string{"nsenter", "--mount=" + p.mountNS(), podmanBin}, p.globalFlags()...)
}

// Command runs podman with args in the host's network namespace and
// podman's mount namespace (see makeMountNS), and returns its combined
// output.
//
// Equivalent to: `nsenter --net=/run/netns/HOSTNS nsenter
// --mount=DIR/mnt/ns env CONTAINERS_CONF=DIR/containers.conf podman
// --root DIR/root ... ARGS...`.
func (p *Podman) Command(ctx context.Context, args ...string) ([]byte, error) {
	return p.l.ExecNsenter(ctx, p.Host.NS, p.env, append(p.argv(), args...)...)
}

// Run starts a container of the lab's busybox image, named name, that
// sleeps, on the conflist's network, and returns it with its address.
// Its network namespace is the lab namespace HOSTNS-NAME (see
// Container).
//
// Equivalent to: `podman run -d --name NAME --network NETWORK
// --cgroup-parent /HOSTNS-podman IMAGE sleep 1000000000`.
func (p *Podman) Run(ctx context.Context, name string) (*Container, error) {
	if !containerName.MatchString(name) {
		return nil, fmt.Errorf("lab: container name %q: want 1-11 of [a-z0-9]", name)
	}
	if _, err := p.Command(ctx, "run", "-d", "--name", name, "--hostname", name, "--network", p.Network,
		"--cgroup-parent", p.cgroupParent, BusyboxImage, "/bin/sleep", "1000000000"); err != nil {
		return nil, err
	}
	net := fmt.Sprintf("(index .NetworkSettings.Networks %q)", p.Network)
	out, err := p.Command(ctx, "inspect", "--format",
		"{{.State.Pid}} {{"+net+".IPAddress}}/{{"+net+".IPPrefixLen}} {{"+net+".Gateway}}", name)
	if err != nil {
		return nil, errors.Join(err, p.rm(ctx, name))
	}
	return p.l.adoptInspected(ctx, p.Host, name, string(out), func() error { return p.rm(ctx, name) })
}

// Remove removes container c (killing it at once), which detaches it
// from the network through the CNI plugins, and its lab namespace name.
//
// Equivalent to: `podman rm -f -t 0 NAME; ip netns del HOSTNS-NAME`.
func (p *Podman) Remove(ctx context.Context, c *Container) error {
	if err := p.rm(ctx, c.Name); err != nil {
		return err
	}
	return p.l.removeAdopted(ctx, c)
}

func (p *Podman) rm(ctx context.Context, names ...string) error {
	_, err := p.Command(ctx, append([]string{"rm", "-f", "-t", "0"}, names...)...)
	return err
}

// close removes every container (through the CNI plugins, while the
// host's agent still runs), kills what is left in podman's cgroups by
// PID, and removes podman's mounts, cgroups and directory.
func (p *Podman) close(ctx context.Context) error {
	var errs []error
	if out, err := p.Command(ctx, "ps", "-aq"); err != nil {
		errs = append(errs, err)
	} else if ids := strings.Fields(string(out)); len(ids) > 0 {
		if err := p.rm(ctx, ids...); err != nil {
			errs = append(errs, err)
		}
	}
	killCgroup(p.cgroupParent)
	// The namespace files of containers whose removal failed (or whose
	// podman run was killed): removing them detaches their mounts in
	// podman's mount namespace.
	files, err := p.ownNetnsFiles(ctx)
	errs = append(errs, err)
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	errs = append(errs, removeRuntimeState(p.Dir, p.cgroupParent), unmountUnder(p.RunDir), os.RemoveAll(p.RunDir))
	_ = os.Remove(podmanRunRoot) // when no other lab's podman uses it
	return errors.Join(errs...)
}
