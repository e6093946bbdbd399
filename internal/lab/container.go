package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// Container is a network namespace standing for a container on a host.
type Container struct {
	// Name is unique on its host; NS is the namespace, Host's NS plus "-"
	// plus Name.
	Name, NS string
	Host     *Host
	// Addr is eth0's address with the subnet's length, and Gateway the
	// host's cni0 address; both invalid when the lab only made the
	// namespace (AddContainerNS).
	Addr    netip.Prefix
	Gateway netip.Addr
}

// containerName keeps "veth"+name within the 15-byte link name limit.
var containerName = regexp.MustCompile(`^[a-z0-9]{1,11}$`)

// ErrBridgeSubnet is returned by AttachContainer when the host's cni0 was
// made for another subnet.
var ErrBridgeSubnet = errors.New("lab: cni0 has another subnet")

// AddContainerNS creates an empty container namespace (loopback up) on
// host h, for a CNI plugin to attach. Names are 1 to 11 lower-case letters
// or digits.
//
// Equivalent to: `ip netns add HOSTNS-NAME; ip -n HOSTNS-NAME link set lo up`.
func (l *Lab) AddContainerNS(ctx context.Context, h *Host, name string) (*Container, error) {
	if !containerName.MatchString(name) {
		return nil, fmt.Errorf("lab: container name %q: want 1-11 of [a-z0-9]", name)
	}
	if l.Host(h.Name) != h {
		return nil, fmt.Errorf("lab: host %s is not in this lab", h.Name)
	}
	c := &Container{Name: name, NS: h.NS + "-" + name, Host: h}
	l.mu.Lock()
	_, exists := l.containers[c.NS]
	l.mu.Unlock()
	if exists {
		return nil, fmt.Errorf("lab: container %s already exists on %s", name, h.Name)
	}
	if err := l.addNS(ctx, c.NS); err != nil {
		if l.checkOwned(c.NS) == nil { // made, then failed
			err = errors.Join(err, l.deleteNS(ctx, c.NS))
		}
		return nil, err
	}
	l.mu.Lock()
	l.containers[c.NS] = c
	l.mu.Unlock()
	return c, nil
}

// AttachContainer creates a container namespace on host h and wires it the
// way a bridge CNI plugin would: a bridge cni0 in the host namespace
// holding the first address of subnet (made on first use), a veth pair
// vethNAME (on cni0) / eth0 (in the container) with the given MTU, the
// next free address of subnet on eth0 and a default route via cni0's
// address. subnet and mtu normally come from the host agent's subnet file
// (see AwaitSubnetFile). On error nothing of the container is left.
//
// Equivalent to:
//
//	ip -n HOSTNS link add cni0 mtu MTU type bridge   # first use
//	ip -n HOSTNS addr add FIRST/LEN dev cni0; ip -n HOSTNS link set cni0 up
//	ip -n HOSTNS link add vethNAME mtu MTU type veth peer name eth0 mtu MTU netns CNS
//	ip -n HOSTNS link set vethNAME master cni0 up
//	ip -n CNS addr add ADDR/LEN dev eth0; ip -n CNS link set eth0 up
//	ip -n CNS route add default via FIRST
func (l *Lab) AttachContainer(ctx context.Context, h *Host, name string, subnet netip.Prefix, mtu int) (_ *Container, err error) {
	if !subnet.Addr().Is4() || subnet.Bits() > 29 {
		return nil, fmt.Errorf("lab: container subnet %s: want IPv4 of length at most 29", subnet)
	}
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("lab: container MTU %d out of range", mtu)
	}
	subnet = subnet.Masked()
	gw := subnet.Addr().Next()

	l.attachMu.Lock()
	defer l.attachMu.Unlock()
	l.mu.Lock()
	bridge, offset := h.bridge, h.nextIP
	l.mu.Unlock()
	if bridge.IsValid() && bridge != subnet {
		return nil, fmt.Errorf("%w: %s is on %s, not %s", ErrBridgeSubnet, h.Name, bridge, subnet)
	}
	if offset < 2 {
		offset = 2
	}
	addr := subnet.Addr()
	for range offset {
		addr = addr.Next()
	}
	if !subnet.Contains(addr) || !subnet.Contains(addr.Next()) { // keep off the broadcast address
		return nil, fmt.Errorf("lab: container subnet %s of %s is full", subnet, h.Name)
	}

	c, err := l.AddContainerNS(ctx, h, name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.RemoveContainer(ctx, c))
		}
	}()
	if !bridge.IsValid() {
		if err := l.ipBatch(ctx, h.NS,
			fmt.Sprintf("link add cni0 mtu %d type bridge", mtu),
			addrCmd(netip.PrefixFrom(gw, subnet.Bits()), "cni0"),
			"link set cni0 up",
		); err != nil {
			return nil, err
		}
		l.mu.Lock()
		h.bridge = subnet
		l.mu.Unlock()
	}
	veth := "veth" + name
	if err := l.ipBatch(ctx, h.NS,
		fmt.Sprintf("link add %s mtu %d type veth peer name eth0 mtu %d netns %s", veth, mtu, mtu, c.NS),
		fmt.Sprintf("link set %s master cni0 up", veth),
	); err != nil {
		return nil, err
	}
	c.Addr, c.Gateway = netip.PrefixFrom(addr, subnet.Bits()), gw
	if err := l.ipBatch(ctx, c.NS,
		addrCmd(c.Addr, "eth0"),
		"link set eth0 up",
		"route add default via "+gw.String(),
	); err != nil {
		return nil, err
	}
	l.mu.Lock()
	h.nextIP = offset + 1
	l.mu.Unlock()
	return c, nil
}

// RemoveContainer deletes the container's links, so that the host ends of
// its veth pairs are gone when it returns (the kernel dismantles a deleted
// namespace's links later), then its namespace.
//
// Equivalent to: `ip -n CNS link del DEV` for each link but lo, then
// `ip netns del CNS`.
func (l *Lab) RemoveContainer(ctx context.Context, c *Container) error {
	if err := l.checkOwned(c.NS); err != nil {
		return err
	}
	// Standard output only: ip also writes notes such as "Peer netns
	// reference is invalid." to standard error, which are not links.
	out, err := exec.CommandContext(ctx, "ip", "-n", c.NS, "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("lab: ip -n %s -o link show: %w", c.NS, err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		// "2: eth0@if7: <...> ...": the name ends at '@' or ':'.
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasSuffix(f[0], ":") {
			continue
		}
		dev, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if dev == "lo" {
			continue
		}
		if err := l.ip(ctx, c.NS, "link", "del", dev); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.deleteNS(ctx, c.NS); err != nil {
		return errors.Join(append(errs, err)...)
	}
	l.mu.Lock()
	delete(l.containers, c.NS)
	l.mu.Unlock()
	return errors.Join(errs...)
}

// Containers returns the containers on host h.
func (l *Lab) Containers(h *Host) []*Container {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*Container
	for _, c := range l.containers {
		if c.Host == h {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *Container) int { return strings.Compare(a.NS, b.NS) })
	return out
}
