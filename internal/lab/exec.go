package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/netagent/netagent/internal/netnsguard"
)

// Exec runs argv inside the lab namespace ns and returns its combined
// output. It fails with ErrForeignNamespace for any other namespace.
//
// Equivalent to: `ip netns exec NS ARGV...`.
func (l *Lab) Exec(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	if err := l.checkOwned(ns); err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("lab: Exec: empty command")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab: in %s: %s: %w: %s", ns, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// ExecNsenter is Exec for programs that need the machine's own mounts
// (see StartNsenter), with env added to the lab process's environment
// and NETAGENT_REFUSE_INITIAL_NETNS=1.
//
// Equivalent to: `nsenter --net=/run/netns/NS env ENV... ARGV...`.
func (l *Lab) ExecNsenter(ctx context.Context, ns string, env []string, argv ...string) ([]byte, error) {
	if err := l.checkOwned(ns); err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("lab: ExecNsenter: empty command")
	}
	wrapper := nsenterArgv(ns)
	cmd := exec.CommandContext(ctx, wrapper[0], append(wrapper[1:], argv...)...)
	cmd.Env = append(append(os.Environ(), env...), netnsguard.EnvRefuse+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab: in %s: %s: %w: %s", ns, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// PingOptions bound a Ping.
type PingOptions struct {
	// Count is the number of echo requests; 0 means 3.
	Count int
	// Size is the ICMP payload size; 0 means ping's default (56).
	Size int
	// DontFragment forbids fragmentation, so that a packet larger than the
	// path MTU fails instead of being fragmented.
	DontFragment bool
}

// Ping sends opts.Count echo requests from the lab namespace fromNS to dst,
// 0.2 s apart, and succeeds when at least one reply came back. The run is
// bounded: the last reply is awaited at most 1 s, and the whole run is
// killed after Count/5+5 s.
//
// Equivalent to: `ip netns exec NS ping -n -q -c COUNT -i 0.2 -W 1 [-M do]
// [-s SIZE] DST`.
func (l *Lab) Ping(ctx context.Context, fromNS string, dst netip.Addr, opts PingOptions) ([]byte, error) {
	count := opts.Count
	if count <= 0 {
		count = 3
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(count)*200*time.Millisecond+5*time.Second)
	defer cancel()
	argv := []string{"ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1"}
	if dst.Is6() {
		argv = append(argv, "-6")
	}
	if opts.DontFragment {
		argv = append(argv, "-M", "do")
	}
	if opts.Size > 0 {
		argv = append(argv, "-s", strconv.Itoa(opts.Size))
	}
	argv = append(argv, dst.String())
	return l.Exec(ctx, fromNS, argv...)
}
