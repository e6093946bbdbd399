package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/netagent/netagent/internal/await"
)

// downTimeout bounds the wait for a lab's `up` process to tear down.
const downTimeout = 90 * time.Second

// dirFlags parses the flags of a command that only takes --dir.
func dirFlags(name string, args []string, stderr io.Writer) (dir string, rest []string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&dir, "dir", defaultDir, "lab directory (holds lab.json)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", nil, err
		}
		return "", nil, usageError{err}
	}
	return dir, fs.Args(), nil
}

// runExec is `netagent-lab exec [--dir DIR] NAME [--] CMD...`: it runs CMD
// inside a namespace of the running lab, with this terminal, and exits
// with CMD's status.
func runExec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	dir, rest, err := dirFlags("exec", args, stderr)
	if err != nil {
		return err
	}
	if len(rest) < 1 {
		return usageError{errors.New("exec: want NAME -- COMMAND...")}
	}
	name, argv := rest[0], rest[1:]
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return usageError{fmt.Errorf("exec %s: no command given", name)}
	}
	s, err := readRunningState(dir)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	ns, err := s.resolve(name)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	// The command shares this terminal: Ctrl-C is its to handle (a ping
	// prints its summary, a shell ignores it), so it is not killed when
	// this process is signalled.
	cmd, err := s.command(context.WithoutCancel(ctx), ns, argv...)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && exitErr.ExitCode() > 0 {
		return exitStatus(exitErr.ExitCode())
	}
	if err != nil {
		return fmt.Errorf("exec in %s: %w", ns, err)
	}
	return nil
}

// runStatus is `netagent-lab status [--dir DIR]`: every agent's status and
// the ping matrix of the running lab; it fails if a ping fails.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	dir, rest, err := dirFlags("status", args, stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Errorf("status: unexpected arguments %q", rest)}
	}
	s, err := readRunningState(dir)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if !s.Ready {
		return fmt.Errorf("status: lab %s in %s is still coming up", s.Prefix, dir)
	}
	fmt.Fprintf(stdout, "lab %s in %s (pid %d, up since %s): %d hosts, store %s, backend %s, network %s\n",
		s.Prefix, dir, s.PID, s.StartedAt.Format(time.TimeOnly), len(s.Hosts), s.store(), s.Backend, joinSet(s.Network, s.IPv6Network))
	printStatuses(ctx, stdout, s.exec, s.Binaries["netagent"], s.Hosts)
	ms := pingMatrices(ctx, s.exec, s.Containers, s.families())
	printMatrices(stdout, ms)
	if err := pingFailures(ms); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return nil
}

// runDown is `netagent-lab down [--dir DIR]`: SIGTERM to the lab's `up`
// process, then wait until it has torn everything down and exited. A lab
// whose process is already gone has its leftovers removed.
func runDown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	dir, rest, err := dirFlags("down", args, stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Errorf("down: unexpected arguments %q", rest)}
	}
	s, err := readState(dir)
	if err != nil {
		return fmt.Errorf("down: %w", err)
	}
	if !upAlive(s.PID) {
		fmt.Fprintf(stdout, "lab %s: process %d is gone; removing its leftovers\n", s.Prefix, s.PID)
		return errors.Join(removeLeftovers(ctx, s), removeLabFiles(dir, false))
	}
	start := time.Now()
	fmt.Fprintf(stdout, "lab %s: stopping process %d ...\n", s.Prefix, s.PID)
	if err := syscall.Kill(s.PID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("down: signal %d: %w", s.PID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, downTimeout)
	defer cancel()
	err = await.Poll(ctx, pollInterval, func() error {
		if upAlive(s.PID) {
			return fmt.Errorf("process %d still running", s.PID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("down: %w", err)
	}
	if left, err := readState(dir); err == nil && left.Prefix == s.Prefix {
		fmt.Fprintf(stdout, "lab %s: its process exited without tearing down; removing its leftovers\n", s.Prefix)
		if err := errors.Join(removeLeftovers(ctx, s), removeLabFiles(dir, false)); err != nil {
			return fmt.Errorf("down: %w", err)
		}
	}
	fmt.Fprintf(stdout, "lab %s is down (%.1fs)\n", s.Prefix, time.Since(start).Seconds())
	return nil
}
