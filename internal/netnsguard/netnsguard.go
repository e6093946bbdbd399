// Package netnsguard tells whether the process runs in the machine's initial
// network namespace, so that tests and the lab can refuse to program it.
package netnsguard

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// EnvRefuse is the environment variable that, when set to 1, makes the agent
// refuse to program anything in the initial network namespace. The test
// harness and the lab set it for every process they start.
const EnvRefuse = "NETAGENT_REFUSE_INITIAL_NETNS"

// InitNetIno is the inode number of the initial network namespace on kernels
// that give it a fixed one (PROC_NET_INIT_INO). Other namespaces get inode
// numbers from 0xF0000000 up, so no other namespace can have it.
const InitNetIno = 0xEFFFFFF9

// ID identifies a namespace file by device and inode.
type ID struct{ Dev, Ino uint64 }

// Stat returns the ID of the namespace file at path (e.g.
// /proc/thread-self/ns/net, /var/run/netns/NAME).
func Stat(path string) (ID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return ID{}, fmt.Errorf("netnsguard: stat %s: %w", path, err)
	}
	return ID{st.Dev, st.Ino}, nil
}

// IsInitial reports whether id is the initial network namespace: the one
// with the fixed inode number, or PID 1's where /proc/1/ns/net can be read
// (a sandbox may deny that even to root). When neither answers, it looks at
// the caller's ancestors: if one of them is in the fixed-number namespace,
// this kernel uses fixed numbers, and an id above them is not the initial
// one. It errs when it cannot tell.
func IsInitial(id ID) (bool, error) {
	if id.Ino == InitNetIno {
		return true, nil
	}
	initial, err := Stat("/proc/1/ns/net")
	if err == nil {
		return initial == id, nil
	}
	if id.Ino >= 0xF0000000 && ancestorInFixedInitial() {
		return false, nil
	}
	return false, fmt.Errorf("netnsguard: cannot tell whether this is the initial network namespace: %w", err)
}

// InInitialNetns reports whether the calling thread's network namespace is
// the initial one.
func InInitialNetns() (bool, error) {
	self, err := Stat("/proc/thread-self/ns/net")
	if err != nil {
		return false, err
	}
	return IsInitial(self)
}

// Check returns an error when EnvRefuse is set and the caller is in the
// initial network namespace, or when it is set and that cannot be told.
func Check() error {
	if os.Getenv(EnvRefuse) != "1" {
		return nil
	}
	initial, err := InInitialNetns()
	if err != nil {
		return fmt.Errorf("%s is set: %w", EnvRefuse, err)
	}
	if initial {
		return fmt.Errorf("netnsguard: refusing to run in the initial network namespace (%s=1)", EnvRefuse)
	}
	return nil
}

// ancestorInFixedInitial reports whether one of the caller's ancestors
// (readable, unlike PID 1) is in a namespace with the fixed initial inode.
func ancestorInFixedInitial() bool {
	pid := os.Getppid()
	for range 8 {
		if pid <= 1 {
			return false
		}
		if id, err := Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && id.Ino == InitNetIno {
			return true
		}
		ppid, err := parentPID(pid)
		if err != nil {
			return false
		}
		pid = ppid
	}
	return false
}

// parentPID reads a process's parent from /proc/PID/stat.
func parentPID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, errors.New("malformed stat")
	}
	return strconv.Atoi(f[1])
}
