// Package netnsguard tells whether the process runs in the machine's initial
// network namespace, so that tests and the lab can refuse to program it.
package netnsguard

import (
	"fmt"
	"os"
	"syscall"
)

// EnvRefuse is the environment variable that, when set to 1, makes the agent
// refuse to program anything in the initial network namespace. The test
// harness and the lab set it for every agent they start.
const EnvRefuse = "NETAGENT_REFUSE_INITIAL_NETNS"

// InInitialNetns reports whether the calling thread's network namespace is
// the one PID 1 lives in.
func InInitialNetns() (bool, error) {
	self, err := nsIno("/proc/thread-self/ns/net")
	if err != nil {
		return false, err
	}
	initial, err := nsIno("/proc/1/ns/net")
	if err != nil {
		return false, err
	}
	return self == initial, nil
}

// Check returns an error when EnvRefuse is set and the caller is in the
// initial network namespace.
func Check() error {
	if os.Getenv(EnvRefuse) != "1" {
		return nil
	}
	initial, err := InInitialNetns()
	if err != nil {
		return fmt.Errorf("netnsguard: %s is set but the network namespace cannot be checked: %w", EnvRefuse, err)
	}
	if initial {
		return fmt.Errorf("netnsguard: refusing to run in the initial network namespace (%s=1)", EnvRefuse)
	}
	return nil
}

func nsIno(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}
