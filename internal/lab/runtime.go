package lab

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Helpers shared by the container runtimes the lab can run on its hosts
// (Docker, Podman): the image they run, the namespaces of their
// containers, and the removal of what they leave on the machine (mounts,
// cgroups) when the lab closes.

// BusyboxPath is the statically linked busybox of Debian's busybox-static,
// the only program in the lab's container image.
const BusyboxPath = "/bin/busybox"

// BusyboxImage is the name the runtimes give the lab's image.
const BusyboxImage = "localhost/netagent-lab/busybox:latest"

// ErrNoBusybox is returned when BusyboxPath is missing or is not a static
// executable (Debian's dynamically linked busybox cannot run in an empty
// root file system).
var ErrNoBusybox = errors.New("lab: a static busybox is needed at " + BusyboxPath + " (Debian package busybox-static)")

// busyboxApplets are the commands the image links to busybox.
var busyboxApplets = []string{"sh", "sleep", "ping", "ip", "ifconfig", "cat", "ls", "nc", "wget", "hostname"}

// BusyboxRootfs writes, as a tar stream, a root file system holding the
// static busybox as /bin/busybox, links to it for common commands, and
// the directories a runtime mounts over: the input of `docker import` and
// `podman import`, since no registry is reachable from the lab.
func BusyboxRootfs(w io.Writer) error {
	if err := checkStatic(BusyboxPath); err != nil {
		return err
	}
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoBusybox, err)
	}
	tw := tar.NewWriter(w)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "run"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
			return fmt.Errorf("lab: busybox image: %w", err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))}); err != nil {
		return fmt.Errorf("lab: busybox image: %w", err)
	}
	if _, err := tw.Write(bin); err != nil {
		return fmt.Errorf("lab: busybox image: %w", err)
	}
	for _, a := range busyboxApplets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}); err != nil {
			return fmt.Errorf("lab: busybox image: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("lab: busybox image: %w", err)
	}
	return nil
}

// checkStatic returns ErrNoBusybox unless path is an ELF executable
// without an interpreter.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoBusybox, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: %s is dynamically linked", ErrNoBusybox, path)
		}
	}
	return nil
}

// importBusybox runs a runtime's import command (argv, reading the tar
// stream on its standard input) with the lab's busybox root file system.
func importBusybox(ctx context.Context, env []string, argv ...string) error {
	var rootfs bytes.Buffer
	if err := BusyboxRootfs(&rootfs); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = &rootfs
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: %s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// adoptContainer names the network namespace of a runtime's container
// (that of its process pid) as the lab namespace HOSTNS-NAME, so that
// Exec, Ping and the other namespace helpers reach it, and records the
// container on h. Close (or removeAdopted) only removes the name: the
// namespace lives as long as the container.
//
// Equivalent to: `ip netns attach HOSTNS-NAME PID`.
func (l *Lab) adoptContainer(ctx context.Context, h *Host, name string, pid int, addr netip.Prefix, gw netip.Addr) (*Container, error) {
	if !containerName.MatchString(name) {
		return nil, fmt.Errorf("lab: container name %q: want 1-11 of [a-z0-9]", name)
	}
	if l.Host(h.Name) != h {
		return nil, fmt.Errorf("lab: host %s is not in this lab", h.Name)
	}
	c := &Container{Name: name, NS: h.NS + "-" + name, Host: h, Addr: addr, Gateway: gw}
	l.mu.Lock()
	_, exists := l.containers[c.NS]
	closed := l.closed
	l.mu.Unlock()
	if exists || closed {
		return nil, fmt.Errorf("lab: container %s already exists on %s, or the lab is closed", name, h.Name)
	}
	if _, err := os.Stat(NSPath(c.NS)); err == nil {
		return nil, fmt.Errorf("lab: namespace %s already exists", c.NS)
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "attach", c.NS, strconv.Itoa(pid)).CombinedOutput()
	if _, statErr := os.Stat(NSPath(c.NS)); statErr == nil {
		l.mu.Lock()
		l.namespaces = append(l.namespaces, c.NS)
		l.owned[c.NS] = true
		l.containers[c.NS] = c
		l.mu.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("lab: ip netns attach %s %d: %w: %s", c.NS, pid, err, bytes.TrimSpace(out))
	}
	if err := checkNotInitial(NSPath(c.NS)); err != nil {
		return nil, errors.Join(err, l.removeAdopted(ctx, c))
	}
	return c, nil
}

// adoptInspected adopts the container name of host h whose runtime
// described it as "PID ADDR/LEN GATEWAY" (see adoptContainer); on error
// it removes the container with rm.
func (l *Lab) adoptInspected(ctx context.Context, h *Host, name, inspect string, rm func() error) (*Container, error) {
	pid, addr, gw, err := parseInspect(inspect)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("lab: inspecting container %s on %s: %w", name, h.Name, err), rm())
	}
	c, err := l.adoptContainer(ctx, h, name, pid, addr, gw)
	if err != nil {
		return nil, errors.Join(err, rm())
	}
	return c, nil
}

// parseInspect reads "PID ADDR/LEN GATEWAY".
func parseInspect(s string) (pid int, addr netip.Prefix, gw netip.Addr, err error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return 0, addr, gw, fmt.Errorf("want PID ADDRESS/LEN GATEWAY, got %q", s)
	}
	if pid, err = strconv.Atoi(f[0]); err != nil || pid <= 0 {
		return 0, addr, gw, fmt.Errorf("container not running: pid %q", f[0])
	}
	if addr, err = netip.ParsePrefix(f[1]); err != nil {
		return 0, addr, gw, err
	}
	if gw, err = netip.ParseAddr(f[2]); err != nil {
		return 0, addr, gw, err
	}
	return pid, addr, gw, nil
}

// removeAdopted removes the name adoptContainer gave a container's
// namespace, and kills what still runs in it (the container's processes:
// its runtime failed to stop them).
func (l *Lab) removeAdopted(ctx context.Context, c *Container) error {
	if err := l.deleteNS(ctx, c.NS); err != nil {
		return err
	}
	l.mu.Lock()
	delete(l.containers, c.NS)
	l.mu.Unlock()
	return nil
}

// unmountUnder detaches every mount at or below dir, deepest first: what
// a runtime leaves when it is stopped with its containers running (its
// data root bound on itself, a container's /dev/shm, its namespace
// files).
//
// Equivalent to: `umount -l` of each mount point under DIR in
// /proc/self/mountinfo.
func unmountUnder(dir string) error {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	points := mountPoints(mountinfo, dir)
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, p := range slices.Compact(points) {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("lab: umount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// mountPoints returns the mount points at or below dir in the mount
// table mountinfo (the text of /proc/PID/mountinfo).
func mountPoints(mountinfo []byte, dir string) []string {
	var points []string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 ...": the
		// mount point is the fifth field, with spaces escaped as \040.
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	return points
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// removeCgroups removes the cgroup parent (a path such as
// "/naxxxx-h1-docker") that a runtime put its containers under, in every
// hierarchy (cgroup v1 controllers, or the v2 unified tree), children
// first. Only empty cgroups can be removed, so a cgroup still holding a
// process is reported, never emptied by force.
//
// Equivalent to: `find /sys/fs/cgroup/*/PARENT /sys/fs/cgroup/PARENT
// -depth -type d -exec rmdir {} \;`.
func removeCgroups(parent string) error {
	roots := []string{filepath.Join(cgroupRoot, parent)}
	if entries, err := os.ReadDir(cgroupRoot); err == nil {
		for _, e := range entries {
			if e.IsDir() {
				roots = append(roots, filepath.Join(cgroupRoot, e.Name(), parent))
			}
		}
	}
	var errs []error
	for _, root := range roots {
		var dirs []string
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
			continue
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("lab: rmdir %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// removeRuntimeState removes what a runtime leaves on the machine
// outside the lab's namespaces: the mounts under its directory dir, the
// cgroups under cgroupParent, and dir itself.
func removeRuntimeState(dir, cgroupParent string) error {
	return errors.Join(unmountUnder(dir), removeCgroups(cgroupParent), os.RemoveAll(dir))
}

// killByArg kills, by PID, every process whose command line holds flag
// followed by value: a runtime's helpers (containerd's shims carry
// "-address SOCKET") that outlived it.
func killByArg(flag, value string) {
	for _, pid := range pidsWhere(func(pid int) bool {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err != nil {
			return false
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag && args[i+1] == value {
				return true
			}
		}
		return false
	}) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// killCgroup kills, by PID, every process left in the cgroups under
// parent (a runtime's containers that it failed to stop), and waits a
// little for them to leave, so that the cgroups can be removed.
func killCgroup(parent string) {
	procs := func() []int {
		var pids []int
		for _, root := range []string{filepath.Join(cgroupRoot, parent), filepath.Join(cgroupRoot, "pids", parent)} {
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
					return nil
				}
				b, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
						pids = append(pids, pid)
					}
				}
				return nil
			})
		}
		return pids
	}
	for range 50 {
		pids := procs()
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pidsWhere returns the processes for which match is true.
func pidsWhere(match func(pid int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		if match(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RemoveRuntimeLeftovers removes what the container runtimes of a lab
// whose process died without closing it may have left on the machine:
// the mounts under the lab directory dir, the cgroups of its hosts'
// runtimes (named after the lab's namespace prefix) and podman's run
// roots. Call it once the lab's namespaces, and so every process of its
// runtimes and containers, are gone.
func RemoveRuntimeLeftovers(dir, prefix string) error {
	errs := []error{unmountUnder(dir)}
	seen := map[string]bool{}
	for _, pattern := range []string{"/*/" + prefix + "-*-docker", "/*/" + prefix + "-*-podman", "/" + prefix + "-*-docker", "/" + prefix + "-*-podman"} {
		matches, _ := filepath.Glob(cgroupRoot + pattern)
		for _, m := range matches {
			if name := filepath.Base(m); !seen[name] {
				seen[name] = true
				errs = append(errs, removeCgroups("/"+name))
			}
		}
	}
	runDirs, _ := filepath.Glob(filepath.Join(podmanRunRoot, prefix+"-*"))
	for _, d := range runDirs {
		errs = append(errs, unmountUnder(d), os.RemoveAll(d))
	}
	_ = os.Remove(podmanRunRoot) // when no other lab's podman uses it
	return errors.Join(errs...)
}
