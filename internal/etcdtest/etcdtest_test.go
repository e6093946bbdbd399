package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestRestartKeepsDataAndPorts(t *testing.T) {
	s := Start(t)
	cli := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart got %v, want k=v", resp.Kvs)
	}
}

func TestProxyCut(t *testing.T) {
	s := Start(t)
	p := NewProxy(t, s.Addr())
	cli := NewClient(t, p.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	short, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := cli.Get(short, "k")
	scancel()
	if err == nil {
		t.Fatal("get through a cut proxy succeeded")
	}
	p.Restore()
	if _, err := cli.Get(ctx, "k", clientv3.WithSerializable()); err != nil {
		t.Fatalf("get after restore: %v", err)
	}
}
