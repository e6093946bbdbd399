package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/lab/kubelab"
)

// Cluster stores, the values of --store: where the agents keep their
// leases.
const (
	// storeEtcd: the lab's etcd, the network config under configKey.
	storeEtcd = "etcd"
	// storeKube: a Kubernetes API server on its own etcd, the agents in
	// kube mode (--kube-subnet-mgr), a Node per host (internal/lab/kubelab).
	storeKube = "kubernetes"
)

// agentFlags returns the store's part of host h's agent: its environment
// and its flags.
type agentFlags func(h *lab.Host) (env, args []string)

// kubeBinaries returns etcd and kube-apiserver from
// scripts/kube-binaries.sh, found above the working directory or this
// program's, saying first what a cold build costs.
func kubeBinaries(ctx context.Context, say func(string, ...any)) (kubelab.Binaries, error) {
	say("%s ...", kubelab.BuildNotice)
	dirs := []string{}
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, wd)
	}
	if self, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(self))
	}
	t := time.Now()
	b, err := kubelab.Build(ctx, dirs...)
	if err != nil {
		return b, err
	}
	say("kube-apiserver %s (%.1fs)", b.APIServer, time.Since(t).Seconds())
	return b, nil
}

// startStore starts the lab's cluster store with the network config cfg,
// records it in st, and returns what every agent needs to use it.
func startStore(ctx context.Context, o *upOptions, l *lab.Lab, st *labState, cfg []byte, kb kubelab.Binaries, say func(string, ...any)) (agentFlags, error) {
	t := time.Now()
	if o.store == storeKube {
		c, err := kubelab.Start(ctx, l, kubelab.Options{Binaries: kb, NetConf: cfg})
		if err != nil {
			return nil, err
		}
		st.APIServer = c.URL
		say("kube-apiserver up at %s with a Node per host, net-conf.json %s (%.1fs)", c.URL, cfg, time.Since(t).Seconds())
		return func(h *lab.Host) ([]string, []string) { return kubelab.AgentEnv(h), kubelab.AgentArgs(h) }, nil
	}
	if err := l.StartEtcd(ctx); err != nil {
		return nil, err
	}
	if err := putConfig(ctx, l, cfg); err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	st.Etcd = l.EtcdEndpoints()[0]
	say("etcd up at %s, network config %s (%.1fs)", st.Etcd, cfg, time.Since(t).Seconds())
	endpoints := "--etcd-endpoints=" + strings.Join(l.EtcdEndpoints(), ",")
	return func(*lab.Host) ([]string, []string) { return nil, []string{endpoints} }, nil
}

// putConfig writes the network config to etcd, from inside the etcd
// namespace.
func putConfig(ctx context.Context, l *lab.Lab, cfg []byte) error {
	cli, err := l.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Put(ctx, configKey, string(cfg))
	return err
}
