// Command netagent-cni is the CNI plugin of netagent: it hands this host's
// lease to the bridge and host-local plugins (package cniplugin, one level
// up, holds all of it).
//
//	go build -o /opt/cni/bin/ ./cni-plugin/netagent-cni
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"

	cniplugin "github.com/netagent/netagent/cni-plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	skel.PluginMainFuncs(cniplugin.Funcs(ctx, os.Stdout, log), cniplugin.SupportedVersions, cniplugin.About)
}
