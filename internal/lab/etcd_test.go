package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestEtcd(t *testing.T) {
	t.Parallel()
	bin := labBinary(t)
	l := newLab(t, Options{Hosts: 1, RoutedHosts: 1, LabBinary: bin})
	ctx := testCtx(t, 45*time.Second)
	if err := l.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.StartEtcd(ctx); !errors.Is(err, ErrEtcdRunning) {
		t.Errorf("second StartEtcd = %v, want ErrEtcdRunning", err)
	}
	cli, err := l.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/lab/key", "value"); err != nil {
		t.Fatal(err)
	}
	get := func(timeout time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		resp, err := cli.Get(ctx, "/lab/key")
		if err != nil {
			return "", err
		}
		if len(resp.Kvs) != 1 {
			return "", fmt.Errorf("got %d keys", len(resp.Kvs))
		}
		return string(resp.Kvs[0].Value), nil
	}
	if v, err := get(30 * time.Second); err != nil || v != "value" {
		t.Fatalf("Get = %q, %v; want value", v, err)
	}

	// Agents reach etcd over the underlay, the routed host through the
	// router.
	ep := strings.TrimPrefix(l.EtcdEndpoints()[0], "http://")
	for _, h := range l.Hosts() {
		c, err := DialInNS(ctx, h.NS, "tcp", ep)
		if err != nil {
			t.Errorf("%s cannot reach etcd: %v", h.Name, err)
			continue
		}
		c.Close()
	}

	// HTTP into a namespace: etcd's health endpoint, from each host.
	for _, h := range l.Hosts() {
		resp, err := HTTPClientInNS(h.NS).Get(l.EtcdEndpoints()[0] + "/health")
		if err != nil {
			t.Errorf("%s: GET /health: %v", h.Name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
			t.Errorf("%s: GET /health = %d %q", h.Name, resp.StatusCode, body)
		}
	}

	if err := l.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	// The Get's own deadline ends it: that it fails, not how soon, is
	// what is checked.
	if _, err := get(time.Second); err == nil {
		t.Error("Get succeeded with etcd stopped")
	}
	if err := l.StopEtcd(); !errors.Is(err, ErrEtcdNotRunning) {
		t.Errorf("StopEtcd when stopped = %v, want ErrEtcdNotRunning", err)
	}

	if err := l.RestartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := get(30 * time.Second); err != nil || v != "value" {
		t.Fatalf("after restart: Get = %q, %v; want value", v, err)
	}

	if err := l.KillEtcd(); err != nil {
		t.Fatal(err)
	}
	if !l.EtcdProc().Exited() {
		t.Fatal("etcd still running after KillEtcd")
	}
	if err := l.RestartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := get(30 * time.Second); err != nil || v != "value" {
		t.Fatalf("after kill and restart: Get = %q, %v; want value", v, err)
	}
	pid := l.EtcdProc().PID()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid)
}
