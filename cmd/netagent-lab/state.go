package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netagent/netagent/internal/atomicfile"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/netnsguard"
)

// defaultDir is the lab directory when --dir is not given.
const defaultDir = "/run/netagent-lab"

// stateFileName is the state file in the lab directory.
const stateFileName = "lab.json"

// labState is what a running `netagent-lab up` records in DIR/lab.json, so
// that the exec, status and down commands of other invocations can act on
// the lab. It is written once the namespaces exist (Ready false) and again
// once everything is up (Ready true), and removed by the teardown.
type labState struct {
	// PID is the `netagent-lab up` process that owns the lab.
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	Ready     bool      `json:"ready"`
	// Prefix starts the name of every namespace of the lab.
	Prefix  string `json:"prefix"`
	Dir     string `json:"dir"`
	Backend string `json:"backend"`
	// Runtime runs the containers: "" or "none" for namespaces attached
	// through netagent-cni, "docker" or "podman".
	Runtime string `json:"runtime,omitempty"`
	// Network is the IPv4 overlay ("" in an IPv6-only lab); IPv6 the
	// --ipv6 mode (off, dual or only; "" reads as off) and IPv6Network the
	// IPv6 overlay when it is not off.
	Network     string `json:"network,omitempty"`
	IPv6        string `json:"ipv6,omitempty"`
	IPv6Network string `json:"ipv6_network,omitempty"`
	// Store is where the agents keep their leases: storeEtcd ("" reads
	// as etcd) or storeKube. Etcd is the etcd endpoint of the etcd
	// store, APIServer the API server's URL of the kubernetes one.
	Store     string `json:"store,omitempty"`
	Etcd      string `json:"etcd_endpoint,omitempty"`
	APIServer string `json:"api_server,omitempty"`
	// Namespaces are all the lab's namespaces: the only ones exec enters.
	Namespaces []string         `json:"namespaces"`
	Hosts      []hostState      `json:"hosts"`
	Containers []containerState `json:"containers"`
	// Binaries are the executables the lab runs, by name (netagent,
	// netagent-cni, netagent-lab, bridge, ...), and BinDir their directory.
	Binaries map[string]string `json:"binaries"`
	BinDir   string            `json:"bin_dir"`
}

// store returns the lab's store: storeEtcd or storeKube, and where it
// serves.
func (s *labState) store() string {
	if s.Store == storeKube {
		return storeKube + " (API server " + s.APIServer + ")"
	}
	return storeEtcd + " (" + s.Etcd + ")"
}

// families returns the lab's overlay families, IPv4 first.
func (s *labState) families() []family { return familiesOf(s.IPv6) }

// hostState is one host of labState. Addresses and leases of a family the
// lab does not have are "".
type hostState struct {
	Name         string `json:"name"`
	NS           string `json:"ns"`
	Underlay     string `json:"underlay,omitempty"`
	UnderlayV6   string `json:"underlay_v6,omitempty"`
	Subnet       string `json:"subnet,omitempty"`
	IPv6Subnet   string `json:"ipv6_subnet,omitempty"`
	StatusSocket string `json:"status_socket"`
	AgentPID     int    `json:"agent_pid,omitempty"`
	AgentLog     string `json:"agent_log,omitempty"`
}

// lease returns the host's lease of family f, or "".
func (h hostState) lease(f family) string {
	if f == ipv6 {
		return h.IPv6Subnet
	}
	return h.Subnet
}

// containerState is one container of labState; Name is HOST-NAME. IP is
// its IPv4 address and IPv6 its IPv6 one, "" for a family the lab does not
// have.
type containerState struct {
	Name string `json:"name"`
	NS   string `json:"ns"`
	Host string `json:"host"`
	IP   string `json:"ip,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
}

// addr returns the container's address of family f, or "".
func (c containerState) addr(f family) string {
	if f == ipv6 {
		return c.IPv6
	}
	return c.IP
}

func statePath(dir string) string { return filepath.Join(dir, stateFileName) }

// write replaces the state file atomically.
func (s *labState) write() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(statePath(s.Dir), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// errNoLab is returned when the lab directory has no state file.
var errNoLab = errors.New("no lab")

// readState reads DIR/lab.json.
func readState(dir string) (*labState, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (no %s): start one with `netagent-lab up --dir %s`", errNoLab, dir, stateFileName, dir)
	}
	if err != nil {
		return nil, err
	}
	var s labState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	if s.Prefix == "" || s.PID <= 0 {
		return nil, fmt.Errorf("%s: no prefix or pid", statePath(dir))
	}
	return &s, nil
}

// readRunningState reads the state of the lab running in dir, and fails if
// its `up` process is gone.
func readRunningState(dir string) (*labState, error) {
	s, err := readState(dir)
	if err != nil {
		return nil, err
	}
	if !upAlive(s.PID) {
		return nil, fmt.Errorf("the lab in %s is not running (its process %d is gone): `netagent-lab down --dir %s` removes what it left", dir, s.PID, dir)
	}
	return s, nil
}

// upAlive reports whether pid is a live (not zombie) netagent-lab process.
func upAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "PID (COMM) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cmdline, []byte("netagent-lab"))
}

// resolve returns the namespace of the lab that name stands for: a host
// ("h1"), a container ("h1-c1"), an infrastructure namespace ("etcd",
// "rt", "sw") or a full namespace name, and only ever one listed in the
// state file.
func (s *labState) resolve(name string) (string, error) {
	for _, ns := range s.Namespaces {
		if !strings.HasPrefix(ns, s.Prefix+"-") {
			continue // never trust a foreign name in the file
		}
		if name == ns || s.Prefix+"-"+name == ns {
			return ns, nil
		}
	}
	var names []string
	for _, h := range s.Hosts {
		names = append(names, h.Name)
	}
	for _, c := range s.Containers {
		names = append(names, c.Name)
	}
	return "", fmt.Errorf("%q is not a namespace of the lab in %s (try one of: %s, etcd, rt, sw)", name, s.Dir, strings.Join(names, ", "))
}

// host returns the host whose namespace is ns, or nil.
func (s *labState) host(ns string) *hostState {
	for i := range s.Hosts {
		if s.Hosts[i].NS == ns {
			return &s.Hosts[i]
		}
	}
	return nil
}

// checkNamespace refuses a namespace that is not the lab's, or that is
// the initial one (or this process's own).
func (s *labState) checkNamespace(ns string) error {
	if !strings.HasPrefix(ns, s.Prefix+"-") || !slices.Contains(s.Namespaces, ns) {
		return fmt.Errorf("%w: %q", lab.ErrForeignNamespace, ns)
	}
	target, err := netnsguard.Stat(lab.NSPath(ns))
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	self, err := netnsguard.Stat("/proc/self/ns/net")
	if err != nil {
		return err
	}
	initial, err := netnsguard.IsInitial(target)
	if err != nil {
		return err
	}
	if initial || target == self {
		return fmt.Errorf("%w: %s", lab.ErrInitialNamespace, ns)
	}
	return nil
}

// command returns `ip netns exec NS argv...` for a namespace of the lab,
// with the lab's binaries first on PATH and, in a host, the host agent's
// status socket in NETAGENT_STATUS_SOCKET.
func (s *labState) command(ctx context.Context, ns string, argv ...string) (*exec.Cmd, error) {
	if err := s.checkNamespace(ns); err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("no command given")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	env := append(os.Environ(), netnsguard.EnvRefuse+"=1")
	if s.BinDir != "" {
		env = append(env, "PATH="+s.BinDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	if h := s.host(ns); h != nil {
		env = append(env, "NETAGENT_STATUS_SOCKET="+h.StatusSocket)
	}
	cmd.Env = env
	return cmd, nil
}

// exec runs argv in the lab namespace ns and returns its combined output;
// it has the signature of lab.Lab.Exec.
func (s *labState) exec(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	cmd, err := s.command(ctx, ns, argv...)
	if err != nil {
		return nil, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in %s: %s: %w: %s", ns, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// removeLeftovers deletes the namespaces that a lab whose `up` process
// died without tearing down left behind: only those listed in its state
// file, carrying its prefix. Processes still inside them (the lab's own:
// nothing else enters them) are killed by PID first.
//
// Equivalent to: `kill -KILL $(ip netns pids NS); ip netns del NS`, for
// each namespace, containers first.
func removeLeftovers(ctx context.Context, s *labState) error {
	existing, err := lab.ListNamespaces(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(s.Namespaces) - 1; i >= 0; i-- {
		ns := s.Namespaces[i]
		if !strings.HasPrefix(ns, s.Prefix+"-") || !slices.Contains(existing, ns) {
			continue
		}
		if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", ns, err, bytes.TrimSpace(out)))
		}
	}
	if s.Runtime != "" && s.Runtime != runtimeNone {
		errs = append(errs, lab.RemoveRuntimeLeftovers(s.Dir, s.Prefix))
	}
	return errors.Join(errs...)
}
