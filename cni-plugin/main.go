// Command netagent-cni is the CNI plugin of netagent (SPEC section 6). It
// reads this host's lease from the subnet file that the agent writes and
// hands a bridge + host-local configuration to the delegate plugins, as
// flannel's CNI plugin does, so that a container gets an address inside the
// lease, the overlay's MTU and a route to the cluster network.
//
// Verbs: ADD, DEL, CHECK, VERSION, STATUS and GC, for CNI spec 0.3.0 to
// 1.1.0. The delegate configuration used by ADD is cached per attachment, so
// that DEL works after the subnet file has changed or gone.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

// about is printed on stderr when the plugin is run without CNI_COMMAND.
const about = "netagent-cni: hands this host's netagent lease to the bridge and host-local CNI plugins"

// supportedVersions are the CNI spec versions the plugin speaks.
var supportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p := &plugin{
		stdout: os.Stdout,
		log:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	skel.PluginMainFuncs(p.funcs(ctx), supportedVersions, about)
}
