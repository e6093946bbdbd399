package main

import (
	"context"
	"fmt"
	"time"

	"github.com/netagent/netagent/internal/lab"
)

// The values of --runtime.
const (
	runtimeNone   = "none"
	runtimeDocker = "docker"
	runtimePodman = "podman"
)

// runtimeTimeout is up's default --timeout with a container runtime.
const runtimeTimeout = 5 * time.Minute

// runContainers starts the container runtime on every host and runs n
// busybox containers with it, hosts in parallel:
//   - docker: a containerd and a dockerd per host, dockerd with the
//     agent's $DOCKER_NETWORK_OPTIONS (docker0 on the lease, the
//     overlay's MTU), containers on docker0;
//   - podman: podman with its CNI backend, the host's conflist (the
//     lab's, for CNI 1.0.0) and the plugins of binDir.
//
// Each container's network namespace is a lab namespace (HOSTNS-cK), so
// exec, status and the ping matrix reach it as they reach the others.
func runContainers(ctx context.Context, l *lab.Lab, st *labState, runtime, binDir string, n int) ([]containerState, error) {
	return eachHost(l.Hosts(), func(i int, h *lab.Host) (out []containerState, _ error) {
		run, err := startRuntime(ctx, l, h, runtime, binDir, st.Hosts[i].StatusSocket)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		for k := 1; k <= n; k++ {
			c, err := run(ctx, fmt.Sprintf("c%d", k))
			if err != nil {
				return out, fmt.Errorf("%s: %w", h.Name, err)
			}
			out = append(out, containerState{Name: h.Name + "-" + c.Name, NS: c.NS, Host: h.Name, IP: c.Addr.Addr().String()})
		}
		return out, nil
	})
}

// startRuntime starts runtime on host h and returns its function that
// runs a container.
func startRuntime(ctx context.Context, l *lab.Lab, h *lab.Host, runtime, binDir, statusSocket string) (func(context.Context, string) (*lab.Container, error), error) {
	switch runtime {
	case runtimeDocker:
		opts, err := lab.AwaitDockerNetworkOptions(ctx, h)
		if err != nil {
			return nil, err
		}
		d, err := l.StartDocker(ctx, h, opts)
		if err != nil {
			return nil, err
		}
		return d.Run, nil
	case runtimePodman:
		conf, err := conflist(h, statusSocket, "1.0.0")
		if err != nil {
			return nil, err
		}
		p, err := l.NewPodman(ctx, h, []string{binDir}, conf)
		if err != nil {
			return nil, err
		}
		return p.Run, nil
	}
	return nil, fmt.Errorf("unknown runtime %q", runtime)
}
