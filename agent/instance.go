package agent

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/masq"
	"github.com/netagent/netagent/probe"
	"github.com/netagent/netagent/subnet/kubestore"
)

// Instances (docs/compatibility.md §11). Several agents may serve one host,
// each for its own overlay network, told apart by their --etcd-prefix as
// flanneld instances are. What a host has only one of is named per
// instance: the status socket, the masquerade chains and tables, the probe
// port; the default instance (--etcd-prefix /coreos.com/network, or
// /atomic.io/network, the prefix of flannel's Atomic, Fedora and CentOS
// packages) keeps the default names, flannel's where flannel has them, so
// that a host switched in place from flanneld takes over its chains. The kernel entries are
// told apart by network and device (backend/internal/dataplane, owner.go).

// defaultPrefixes are the prefixes whose instance keeps the default names:
// flannel's own default and that of its distribution packages.
var defaultPrefixes = map[string]bool{DefaultEtcdPrefix: true, "/atomic.io/network": true}

// InstanceID is the short name of the instance serving etcd prefix
// (trailing slashes aside): "" for the default prefixes (defaultPrefixes),
// else the first 8 hex digits of the prefix's SHA-256.
func InstanceID(prefix string) string {
	p := normalPrefix(prefix)
	if defaultPrefixes[p] {
		return ""
	}
	sum := prefixSum(p)
	return hex.EncodeToString(sum[:4])
}

// StatusSocketFor is the default status socket of the instance serving
// prefix: DefaultStatusSocket, or /run/netagent/netagent-<id>.sock.
func StatusSocketFor(prefix string) string {
	id := InstanceID(prefix)
	if id == "" {
		return DefaultStatusSocket
	}
	return filepath.Join(filepath.Dir(DefaultStatusSocket), "netagent-"+id+".sock")
}

// ProbePortFor is the default probe port of the instance serving prefix:
// probe.DefaultPort (8473), or a port in 8474–9473 derived from the
// prefix's SHA-256, the same on every host of the instance.
func ProbePortFor(prefix string) int {
	p := normalPrefix(prefix)
	if defaultPrefixes[p] {
		return probe.DefaultPort
	}
	sum := prefixSum(p)
	return probe.DefaultPort + 1 + int(binary.BigEndian.Uint16(sum[4:6]))%1000
}

// MasqNames are the masquerade chain and table names of the instance
// serving prefix.
func MasqNames(prefix string) masq.Names {
	n, err := masq.InstanceNames(InstanceID(prefix))
	if err != nil {
		// An 8-digit hex id always fits.
		panic(err)
	}
	return n
}

func normalPrefix(prefix string) string {
	if p := strings.TrimRight(prefix, "/"); p != "" {
		return p
	}
	return prefix
}

func prefixSum(p string) [sha256.Size]byte { return sha256.Sum256([]byte(p)) }

// instanceLock is held by the one agent of an instance in a network
// namespace: an abstract unix socket, which belongs to the network
// namespace and goes away with the process, named after the prefix's full
// SHA-256, or "default" for the default prefixes, which share the default
// names (so two of them on one host refuse each other rather than share
// chains). Lab hosts in different namespaces sharing /run do not collide.
type instanceLock struct{ l *net.UnixListener }

// lockInstance takes the instance lock of prefix, or says which process
// holds it.
//
// Equivalent to: binding `@netagent/instance/<sha256 of prefix>`.
func lockInstance(prefix string) (*instanceLock, error) {
	p := normalPrefix(prefix)
	sum := prefixSum(p)
	name := hex.EncodeToString(sum[:])
	if defaultPrefixes[p] {
		name = "default"
	}
	addr := &net.UnixAddr{Name: "@netagent/instance/" + name, Net: "unix"}
	l, err := net.ListenUnix("unix", addr)
	if err == nil {
		go func() {
			// Answer (and drop) those who ask who holds the lock.
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return &instanceLock{l: l}, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("agent: instance lock: %w", err)
	}
	holder := "another process"
	if pid, perr := peerPID(addr); perr == nil {
		holder = fmt.Sprintf("process %d", pid)
	}
	if defaultPrefixes[p] {
		var other []string
		for q := range defaultPrefixes {
			if q != p {
				other = append(other, q)
			}
		}
		return nil, fmt.Errorf("agent: another netagent (%s) already serves --etcd-prefix %s (or %s, which shares its names) in this network namespace: stop it first (two agents of one instance would take the lease from each other; a second network on this host needs a prefix of its own)", holder, p, strings.Join(other, ", "))
	}
	return nil, fmt.Errorf("agent: another netagent (%s) already serves %s in this network namespace: stop it first (two agents of one instance would take the lease from each other)", holder, instanceFlag(p))
}

// instanceFlag names the flag and value of an instance key (InstanceKey).
func instanceFlag(key string) string {
	if p, ok := strings.CutPrefix(key, "kube:"); ok {
		return "--kube-annotation-prefix " + p
	}
	return "--etcd-prefix " + key
}

func (l *instanceLock) Close() error { return l.l.Close() }

// peerPID connects to the unix socket at addr and returns the PID of the
// process listening on it (SO_PEERCRED).
func peerPID(addr *net.UnixAddr) (int, error) {
	c, err := net.DialUnix("unix", nil, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return int(cred.Pid), nil
}

// InstanceKey is what tells this instance apart from others on the host:
// the etcd prefix, or in kube mode the annotation prefix, as
// "kube:<prefix>". Kube mode with flannel's default annotation prefix is
// the default instance (DefaultEtcdPrefix): it keeps flannel's names (a
// host switched from flanneld --kube-subnet-mgr takes over its chains) and
// refuses to run beside a default etcd-mode agent, whose device and
// chains it would share.
func (o *Options) InstanceKey() string {
	if !o.Kube.Enabled {
		return o.Etcd.Prefix
	}
	if o.Kube.AnnotationPrefix == kubestore.DefaultAnnotationPrefix {
		return DefaultEtcdPrefix
	}
	return "kube:" + o.Kube.AnnotationPrefix
}
