// Command netagent is the overlay network agent of a container host: it
// leases this host's subnet from etcd (or, with --kube-subnet-mgr, takes its
// Node's pod CIDR from the Kubernetes API), programs the kernel so that containers
// on all hosts reach each other, and writes the files Docker and CNI read.
//
// Usage:
//
//	netagent run [flags]     serve (also: netagent --flag…, as flanneld)
//	netagent status [--json] [--check]
//	                         show the running agent's state; --check exits 1
//	                         when a peer is unreachable
//	netagent config check FILE | get | set FILE
//	                         validate, show or write the network config
//	netagent version         print the version, commit and Go version
//	netagent help            list the commands (also: netagent, netagent --help)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/hostgw"
	"github.com/netagent/netagent/backend/vxlan"
	"github.com/netagent/netagent/backend/wireguard"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Environ(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "netagent: %v\n", err)
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

const usage = `usage: netagent <command> [flags]

commands:
  run       run the agent: lease this host's subnet, program the overlay
  status    show what the running agent on this host knows and does
  config    validate a network config file, show or set the one in etcd
  version   print the version, commit and Go version
  help      print this list

'netagent --flag ...' runs the agent, as flanneld is invoked; 'netagent'
alone prints this list. Run 'netagent run -h' for the agent's flags. Every
flag can also be set through the environment: --etcd-endpoints as
NETAGENT_ETCD_ENDPOINTS (flanneld's FLANNELD_* and FLANNEL_* names too).
`

func run(ctx context.Context, args []string, getenv func(string) string, environ []string, stdout, stderr io.Writer) error {
	backends := backendKinds(wireguard.Options{})
	var cmd string
	switch {
	case len(args) == 0:
		// Not the agent: a unit that started flanneld with no argument
		// at all (settings from FLANNELD_* only) must say `netagent run`.
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		cmd, args = "help", args[1:]
	case strings.HasPrefix(args[0], "-"):
		cmd = "run"
	default:
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runAgent(ctx, args, getenv, environ, stderr)
	case "status":
		return runStatus(ctx, args, getenv, stdout, stderr)
	case "config":
		return runConfig(ctx, backends, args, getenv, os.Stdin, stdout, stderr)
	case "version":
		printVersion(stdout, readBuildInfo())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
}

func runAgent(ctx context.Context, args []string, getenv func(string) string, environ []string, stderr io.Writer) error {
	opts, warnings, err := parseRun(args, getenv, environ, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	opts.Version = version
	log := newJournalLogger(stderr, opts.LogLevel, opts.LogFormat, getenv("JOURNAL_STREAM") != "")
	for _, w := range warnings {
		log.Warn(w)
	}
	applyMemoryLimit(ctx, log, opts.MemoryLimit, opts.MemoryLimitFloor)
	backends := backendKinds(wireguard.Options{
		Impl:      opts.WireGuardImpl,
		SocketDir: opts.WireGuardSocketDir,
		KeyFile:   getenv(wireguard.KeyFileEnv),
	})
	return agent.New(opts, log, backends).Run(ctx)
}

// backendKinds is every backend netagent can run: `run` builds the one the
// network config names, and `config check/set` validate against the same
// list. wg is the wireguard backend's settings from the command line.
func backendKinds(wg wireguard.Options) backend.Kinds {
	return backend.Kinds{
		{Type: vxlan.Type, Validate: vxlan.Validate, New: backend.Construct(vxlan.New)},
		{Type: hostgw.Type, New: backend.Construct(hostgw.New)},
		{Type: wireguard.Type, Validate: wireguard.Validate, New: backend.Construct(wireguard.Factory(wg))},
	}
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	return newJournalLogger(w, level, format, false)
}

// newJournalLogger returns the agent's logger. When journal is set (stderr
// goes to journald: JOURNAL_STREAM is set) text lines carry no time, as
// journald stamps each line itself.
func newJournalLogger(w io.Writer, level, format string, journal bool) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by Options.Validate
	ho := &slog.HandlerOptions{Level: lv}
	if journal && format != "json" {
		ho.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}
