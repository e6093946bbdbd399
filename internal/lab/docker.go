package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netagent/netagent/internal/await"
)

// Debian docker.io's programs, by full path: /usr/local/bin/docker may be
// a newer client that has no engine (docker.io 20.10 serves API 1.41,
// which any newer client also speaks, but the pair tested is Debian's).
const (
	DockerCLI     = "/usr/bin/docker"
	dockerdBin    = "/usr/sbin/dockerd"
	containerdBin = "/usr/bin/containerd"
)

// ErrNoDocker is returned by StartDocker when Docker's programs are
// missing.
var ErrNoDocker = errors.New("lab: Docker needs " + dockerdBin + ", " + containerdBin + " and " + DockerCLI + " (Debian package docker.io)")

// dockerStopGrace bounds a dockerd's shutdown after SIGTERM: with
// --live-restore it leaves its containers running and exits at once.
const dockerStopGrace = 30 * time.Second

// maxSocketPath keeps a unix socket path within sun_path (108 bytes, with
// room for containerd's ".ttrpc" suffix).
const maxSocketPath = 100

// Docker is a Docker engine running in a lab host's network namespace:
// its own containerd and dockerd, with every path of its own under Dir, so
// that the engines of several hosts never meet (they share the machine's
// file system, not its network namespaces). Every bridge and iptables
// rule the engine makes is in the host's namespace.
type Docker struct {
	Host *Host
	// Dir holds the engine's state: containerd's and dockerd's roots,
	// sockets, configuration and pid file.
	Dir string
	// NetworkOptions are dockerd's network flags, normally the agent's
	// $DOCKER_NETWORK_OPTIONS (see DockerNetworkOptions).
	NetworkOptions []string

	l            *Lab
	cgroupParent string

	mu                  sync.Mutex
	containerd, dockerd *Proc
}

// DockerNetworkOptions reads $DOCKER_NETWORK_OPTIONS, the flags the agent
// gives dockerd (--bip, --ip-masq, --mtu, ...), from the Docker options
// file at path, as a systemd EnvironmentFile would.
func DockerNetworkOptions(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "DOCKER_NETWORK_OPTIONS=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		}
		return strings.Fields(v), nil
	}
	return nil, fmt.Errorf("lab: %s has no DOCKER_NETWORK_OPTIONS", path)
}

// DockerOptsFile is where the host's agent should write its Docker
// options file (`--docker-opts-file`).
func (h *Host) DockerOptsFile() string { return filepath.Join(h.Dir, "docker") }

// AwaitDockerNetworkOptions waits until host h's agent has written its
// Docker options file at h.DockerOptsFile() (after its subnet file), and
// returns $DOCKER_NETWORK_OPTIONS.
func AwaitDockerNetworkOptions(ctx context.Context, h *Host) ([]string, error) {
	var opts []string
	err := await.Poll(ctx, 100*time.Millisecond, func() (err error) {
		opts, err = DockerNetworkOptions(h.DockerOptsFile())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: waiting for %s's Docker options: %w", h.Name, err)
	}
	return opts, nil
}

// StartDocker starts a Docker engine in host h's network namespace with
// dockerd's network flags networkOptions, waits until it answers, and
// imports the lab's busybox image (BusyboxImage). Close stops it, removes
// its containers, mounts and cgroups, and its directory.
//
// The engine is started as
//
//	nsenter --net=/run/netns/HOSTNS containerd --config DIR/containerd.toml
//	nsenter --net=/run/netns/HOSTNS dockerd --containerd=DIR/containerd.sock \
//	    --data-root=DIR/data --exec-root=DIR/exec --pidfile=DIR/dockerd.pid \
//	    -H unix://DIR/docker.sock --config-file=DIR/daemon.json \
//	    --storage-driver=vfs --cgroup-parent=/HOSTNS-docker --live-restore \
//	    NETWORK-OPTIONS...
//
// nsenter, not `ip netns exec`, which would hide the cgroup mounts; its
// own containerd, since a dockerd without --containerd uses the machine's
// /run/containerd/containerd.sock whenever one runs there; vfs, which
// needs no kernel support; --live-restore, so that a restarted dockerd
// finds its containers still running, as a host's would.
func (l *Lab) StartDocker(ctx context.Context, h *Host, networkOptions []string) (_ *Docker, err error) {
	for _, p := range []string{dockerdBin, containerdBin, DockerCLI} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoDocker, err)
		}
	}
	if err := checkStatic(BusyboxPath); err != nil {
		return nil, err
	}
	d := &Docker{
		Host: h, Dir: filepath.Join(h.Dir, "dockerd"), NetworkOptions: networkOptions,
		l: l, cgroupParent: "/" + h.NS + "-docker",
	}
	if n := len(d.socket("containerd.sock")); n > maxSocketPath {
		return nil, fmt.Errorf("lab: Docker's sockets would be %d bytes long under %s: use a shorter lab directory", n, d.Dir)
	}
	if err := d.writeConfig(); err != nil {
		return nil, err
	}
	if err := l.onClose(d.close); err != nil {
		return nil, errors.Join(err, os.RemoveAll(d.Dir))
	}
	if err := d.startContainerd(ctx); err != nil {
		return nil, err
	}
	if err := d.startDockerd(ctx); err != nil {
		return nil, err
	}
	if err := importBusybox(ctx, nil, DockerCLI, "-H", d.Endpoint(), "import", "-", BusyboxImage); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Docker) socket(name string) string { return filepath.Join(d.Dir, name) }

// Endpoint is the engine's API socket, as a -H/DOCKER_HOST value.
func (d *Docker) Endpoint() string { return "unix://" + d.socket("docker.sock") }

// writeConfig makes the engine's directory with containerd's
// configuration and an empty daemon.json (so that the machine's
// /etc/docker/daemon.json is never read).
func (d *Docker) writeConfig() error {
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	// The CRI plugin is Kubernetes' and the opt plugin would install
	// into /opt/containerd: neither is wanted.
	toml := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]
[grpc]
  address = %q
`, filepath.Join(d.Dir, "containerd"), filepath.Join(d.Dir, "containerd-state"), d.socket("containerd.sock"))
	if err := os.WriteFile(d.socket("containerd.toml"), []byte(toml), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := os.WriteFile(d.socket("daemon.json"), []byte("{}\n"), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// startContainerd starts containerd and waits for its socket.
func (d *Docker) startContainerd(ctx context.Context) error {
	p, err := d.l.StartNsenter(d.Host.NS, nil, containerdBin, "--config", d.socket("containerd.toml"))
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.containerd = p
	d.mu.Unlock()
	return d.await(ctx, p, "containerd", func() error {
		c, err := net.Dial("unix", d.socket("containerd.sock"))
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// dockerdArgs is dockerd's command line.
func (d *Docker) dockerdArgs() []string {
	return append([]string{dockerdBin,
		"--containerd=" + d.socket("containerd.sock"),
		"--data-root=" + filepath.Join(d.Dir, "data"),
		"--exec-root=" + filepath.Join(d.Dir, "exec"),
		"--pidfile=" + d.socket("dockerd.pid"),
		"-H", d.Endpoint(),
		"--config-file=" + d.socket("daemon.json"),
		"--storage-driver=vfs",
		"--cgroup-parent=" + d.cgroupParent,
		"--live-restore",
	}, d.NetworkOptions...)
}

// startDockerd starts dockerd and waits until its API answers.
func (d *Docker) startDockerd(ctx context.Context) error {
	p, err := d.l.StartNsenter(d.Host.NS, nil, d.dockerdArgs()...)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.dockerd = p
	d.mu.Unlock()
	return d.await(ctx, p, "dockerd", func() error {
		_, err := d.CLI(ctx, "version", "--format", "{{.Server.Version}}")
		return err
	})
}

// await polls ready until it succeeds, p exits or ctx is done.
func (d *Docker) await(ctx context.Context, p *Proc, what string, ready func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := await.Poll(ctx, 100*time.Millisecond, ready); err != nil {
		if p.Exited() {
			return fmt.Errorf("lab: %s on %s exited: %v; end of %s:\n%s", what, d.Host.Name, p.Wait(context.Background()), p.LogPath, p.Tail(1500))
		}
		return fmt.Errorf("lab: waiting for %s on %s: %w", what, d.Host.Name, err)
	}
	return nil
}

// Dockerd is the running dockerd (a new one after Restart).
func (d *Docker) Dockerd() *Proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dockerd
}

// Restart stops dockerd (SIGTERM; --live-restore leaves the containers
// running), starts it again with the same flags and waits until its API
// answers.
func (d *Docker) Restart(ctx context.Context) error {
	if err := d.Dockerd().Stop(dockerStopGrace); err != nil {
		return fmt.Errorf("lab: stopping dockerd on %s: %w", d.Host.Name, err)
	}
	return d.startDockerd(ctx)
}

// CLI runs Debian's docker client against the engine and returns its
// standard output. The client only talks to the engine's socket, so it
// runs in the lab's own namespace.
//
// Equivalent to: `docker -H unix://DIR/docker.sock ARGS...`.
func (d *Docker) CLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, DockerCLI, append([]string{"-H", d.Endpoint()}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("lab: docker %s on %s: %w: %s", strings.Join(args, " "), d.Host.Name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// Run starts a container of the lab's busybox image, named name, that
// sleeps, on the default bridge network (docker0, on the lease when
// dockerd has the agent's options), and returns it with its address. Its
// network namespace is the lab namespace HOSTNS-NAME (see Container).
//
// Equivalent to: `docker run -d --name NAME --hostname NAME IMAGE sleep
// 1000000000`.
func (d *Docker) Run(ctx context.Context, name string) (*Container, error) {
	if !containerName.MatchString(name) {
		return nil, fmt.Errorf("lab: container name %q: want 1-11 of [a-z0-9]", name)
	}
	if _, err := d.CLI(ctx, "run", "-d", "--name", name, "--hostname", name, BusyboxImage, "/bin/sleep", "1000000000"); err != nil {
		return nil, err
	}
	out, err := d.CLI(ctx, "inspect", "--format",
		"{{.State.Pid}} {{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}} {{.NetworkSettings.Gateway}}", name)
	if err != nil {
		return nil, errors.Join(err, d.rm(ctx, name))
	}
	return d.l.adoptInspected(ctx, d.Host, name, string(out), func() error { return d.rm(ctx, name) })
}

// Remove removes container c (killing it) and its lab namespace name.
//
// Equivalent to: `docker rm -f NAME; ip netns del HOSTNS-NAME`.
func (d *Docker) Remove(ctx context.Context, c *Container) error {
	if err := d.rm(ctx, c.Name); err != nil {
		return err
	}
	return d.l.removeAdopted(ctx, c)
}

func (d *Docker) rm(ctx context.Context, names ...string) error {
	_, err := d.CLI(ctx, append([]string{"rm", "-f"}, names...)...)
	return err
}

// close removes every container while dockerd runs, stops dockerd and
// containerd, kills what they left running (containers whose removal
// failed) by PID, and removes the engine's mounts, cgroups and
// directory.
func (d *Docker) close(ctx context.Context) error {
	d.mu.Lock()
	dockerd, containerd := d.dockerd, d.containerd
	d.mu.Unlock()
	var errs []error
	if dockerd != nil && !dockerd.Exited() {
		if out, err := d.CLI(ctx, "ps", "-aq"); err != nil {
			errs = append(errs, err)
		} else if ids := strings.Fields(string(out)); len(ids) > 0 {
			if err := d.rm(ctx, ids...); err != nil {
				errs = append(errs, err)
			}
		}
		if err := dockerd.Stop(dockerStopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	if containerd != nil {
		if err := containerd.Stop(closeGrace); err != nil && !isSignalExit(err) {
			errs = append(errs, err)
		}
	}
	killByArg("-address", d.socket("containerd.sock")) // containerd's shims, if any survived
	killCgroup(d.cgroupParent)
	errs = append(errs, removeRuntimeState(d.Dir, d.cgroupParent))
	return errors.Join(errs...)
}

// isSignalExit reports whether err is the exit of a process killed by a
// signal: containerd exits on SIGTERM without a status.
func isSignalExit(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}
