// Package subnetfile reads and writes the files that Docker and CNI plugins
// read to learn this host's lease (docs/compatibility.md §4): the subnet file
// (/run/flannel/subnet.env) and the Docker options file. Writes are atomic:
// a reader sees the old file or the new one, never a torn one.
package subnetfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/netagent/netagent/internal/atomicfile"
)

// DefaultPath is flannel's subnet file, read by flannel's CNI plugin and by
// Docker drop-ins.
const DefaultPath = "/run/flannel/subnet.env"

// Info is what the subnet file says.
type Info struct {
	// Network is the IPv4 overlay and Subnet this host's IPv4 lease (the
	// network address with its length, e.g. 10.5.58.0/24); both invalid on
	// an IPv6-only overlay.
	Network netip.Prefix
	Subnet  netip.Prefix
	// IPv6Network and IPv6Subnet are the same for IPv6, or invalid.
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	// MTU is the MTU containers should use.
	MTU int
	// IPMasq is true when the agent masquerades traffic leaving the overlay.
	IPMasq bool
}

// firstHost returns the first host address of p with p's length, as the
// subnet file writes it: 10.5.58.0/24 -> 10.5.58.1/24.
func firstHost(p netip.Prefix) string {
	return netip.PrefixFrom(p.Masked().Addr().Next(), p.Bits()).String()
}

// Marshal returns the subnet file's contents for info.
func (info Info) Marshal() []byte {
	var b bytes.Buffer
	if info.Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", info.Network.Masked())
	}
	if info.Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", firstHost(info.Subnet))
	}
	if info.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", info.IPv6Network.Masked())
	}
	if info.IPv6Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s\n", firstHost(info.IPv6Subnet))
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", info.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", info.IPMasq)
	return b.Bytes()
}

// DockerOpts returns the Docker options file's contents for info.
func (info Info) DockerOpts() []byte {
	var b bytes.Buffer
	var all []string
	add := func(name, opt string) {
		fmt.Fprintf(&b, "%s=%q\n", name, opt)
		all = append(all, opt)
	}
	if info.Subnet.IsValid() {
		add("DOCKER_OPT_BIP", "--bip="+firstHost(info.Subnet))
	}
	add("DOCKER_OPT_IPMASQ", "--ip-masq="+strconv.FormatBool(!info.IPMasq))
	add("DOCKER_OPT_MTU", "--mtu="+strconv.Itoa(info.MTU))
	if info.IPv6Subnet.IsValid() {
		add("DOCKER_OPT_IPV6", "--ipv6 --fixed-cidr-v6="+info.IPv6Subnet.Masked().String())
	}
	fmt.Fprintf(&b, "DOCKER_NETWORK_OPTIONS=%q\n", " "+strings.Join(all, " "))
	return b.Bytes()
}

// Write writes the subnet file for info to path atomically.
func Write(path string, info Info) error {
	return WriteAtomic(path, info.Marshal())
}

// WriteDockerOpts writes the Docker options file for info to path atomically.
func WriteDockerOpts(path string, info Info) error {
	return WriteAtomic(path, info.DockerOpts())
}

// WriteAtomic writes data to path through a temporary file in the same
// directory, fsynced and renamed over path, with mode 0644, and fsyncs the
// directory; missing directories are created with mode 0755.
func WriteAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

// MaxSize bounds the subnet file that Read accepts.
const MaxSize = 64 << 10

// ErrMalformed is wrapped by every error about a subnet file's contents.
var ErrMalformed = errors.New("subnetfile: malformed subnet file")

// Read reads and parses the subnet file at path.
func Read(path string) (Info, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Info{}, err
	}
	info, err := Parse(data)
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}

// Parse parses a subnet file's contents. Blank lines and lines starting with
// '#' are ignored; values may be quoted; unknown FLANNEL_* keys are ignored.
// FLANNEL_SUBNET (or FLANNEL_IPV6_SUBNET) and FLANNEL_MTU are required, and
// each subnet must lie inside its network when both are given.
func Parse(data []byte) (Info, error) {
	var info Info
	if len(data) > MaxSize {
		return info, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxSize)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return info, fmt.Errorf("%w: line %d: no '='", ErrMalformed, n)
		}
		key = strings.TrimSpace(key)
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
			val = val[1 : len(val)-1]
		}
		if seen[key] {
			return info, fmt.Errorf("%w: line %d: %s given twice", ErrMalformed, n, key)
		}
		seen[key] = true
		var err error
		switch key {
		case "FLANNEL_NETWORK":
			info.Network, err = parsePrefix(val, true, false)
		case "FLANNEL_SUBNET":
			info.Subnet, err = parsePrefix(val, true, true)
		case "FLANNEL_IPV6_NETWORK":
			info.IPv6Network, err = parsePrefix(val, false, false)
		case "FLANNEL_IPV6_SUBNET":
			info.IPv6Subnet, err = parsePrefix(val, false, true)
		case "FLANNEL_MTU":
			info.MTU, err = strconv.Atoi(val)
			if err == nil && (info.MTU < 68 || info.MTU > 65535) {
				err = fmt.Errorf("%d is outside 68..65535", info.MTU)
			}
		case "FLANNEL_IPMASQ":
			info.IPMasq, err = strconv.ParseBool(val)
		}
		if err != nil {
			return info, fmt.Errorf("%w: line %d: %s: %v", ErrMalformed, n, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return info, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !info.Subnet.IsValid() && !info.IPv6Subnet.IsValid() {
		return info, fmt.Errorf("%w: neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is set", ErrMalformed)
	}
	if !seen["FLANNEL_MTU"] {
		return info, fmt.Errorf("%w: FLANNEL_MTU is not set", ErrMalformed)
	}
	if info.Network.IsValid() && info.Subnet.IsValid() && !contains(info.Network, info.Subnet) {
		return info, fmt.Errorf("%w: FLANNEL_SUBNET %s is outside FLANNEL_NETWORK %s", ErrMalformed, info.Subnet, info.Network)
	}
	if info.IPv6Network.IsValid() && info.IPv6Subnet.IsValid() && !contains(info.IPv6Network, info.IPv6Subnet) {
		return info, fmt.Errorf("%w: FLANNEL_IPV6_SUBNET %s is outside FLANNEL_IPV6_NETWORK %s", ErrMalformed, info.IPv6Subnet, info.IPv6Network)
	}
	return info, nil
}

// parsePrefix parses a CIDR of the given family. A host address is masked
// to its network when host is true (FLANNEL_SUBNET names the first host);
// otherwise the address must be the network address.
func parsePrefix(s string, v4, host bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if p.Addr().Is4() != v4 || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv%s prefix", s, map[bool]string{true: "4", false: "6"}[v4])
	}
	if !host && p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s is not a network address", s)
	}
	return p.Masked(), nil
}

func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}
