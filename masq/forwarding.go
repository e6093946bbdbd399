package masq

import (
	"bytes"
	"fmt"
	"os"
)

// Paths of the forwarding sysctls. /proc/sys/net shows the network
// namespace of the thread that opens it.
const (
	sysctlIPv4Forward = "/proc/sys/net/ipv4/ip_forward"
	sysctlIPv6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// EnableForwarding turns on IPv4 forwarding (v4) and IPv6 forwarding on all
// interfaces (v6) in the network namespace of the calling thread. A sysctl
// already at 1 is not written. Equivalent to: `sysctl -w
// net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1`.
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if err := enableSysctl(sysctlIPv4Forward); err != nil {
			return err
		}
	}
	if v6 {
		if err := enableSysctl(sysctlIPv6Forward); err != nil {
			return err
		}
	}
	return nil
}

func enableSysctl(path string) error {
	cur, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("masq: enable forwarding: %w", err)
	}
	if string(bytes.TrimSpace(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("masq: enable forwarding: %w", err)
	}
	return nil
}
