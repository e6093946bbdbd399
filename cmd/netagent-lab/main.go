// Command netagent-lab runs a simulated netagent cluster on one machine:
// network namespaces standing for hosts, an underlay switch and router, and
// an etcd, all built by package internal/lab. It never programs the
// machine's own network namespace.
//
// Usage:
//
//	netagent-lab up [flags]                    bring a lab up: etcd (or, with --store kubernetes,
//	                                           a kube-apiserver), hosts running netagent,
//	                                           containers attached by netagent-cni, a ping matrix
//	netagent-lab exec [--dir D] NAME -- CMD... run CMD inside a lab host or container (h1, h1-c1)
//	netagent-lab status [--dir D]              print every agent's status and the ping matrix
//	netagent-lab down [--dir D]                tear the running lab down
//	netagent-lab etcd [flags]                  run an embedded etcd server (the lab starts
//	                                           it inside its etcd namespace)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var x exitStatus
		if errors.As(err, &x) {
			os.Exit(int(x))
		}
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "netagent-lab: %v\n", err)
		}
		var u usageError
		if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a bad command line: exit status 2.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// exitStatus is the exit status of a command run by `netagent-lab exec`,
// passed on as the lab's own, with nothing printed.
type exitStatus int

func (x exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(x)) }

const usage = `usage: netagent-lab <command> [flags]

commands:
  up        bring a lab up (etcd or a kube-apiserver, N hosts running netagent, containers)
            and keep it up
  exec      run a command inside a lab host or container: exec h1-c1 -- ip route
  status    print every agent's status and the container ping matrix
  down      tear the running lab down
  etcd      run an embedded etcd server (started by the lab in its namespace)

Run 'netagent-lab <command> -h' for a command's flags.
`

// run dispatches to the subcommand named by args[0].
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "up":
		return runUp(ctx, rest, stdout, stderr)
	case "exec":
		return runExec(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "down":
		return runDown(ctx, rest, stdout, stderr)
	case "etcd":
		return runEtcd(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
}
