package subnet

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
)

const regTestGoodConfig = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`

func TestRegistryConfig(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	ctx := regTestCtx(t, 2*regTestWait)
	if _, _, err := r.Config(ctx); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("absent config: %v, want ErrNoConfig", err)
	}
	if _, err := cli.Put(ctx, r.ConfigKey(), `{"Network":"10.5.0.0/33"}`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Config(ctx); !errors.Is(err, lease.ErrInvalidConfig) {
		t.Fatalf("invalid config: %v, want ErrInvalidConfig", err)
	}
	put, err := cli.Put(ctx, r.ConfigKey(), regTestGoodConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, rev, err := r.Config(ctx)
	if err != nil || cfg.Network.String() != "10.5.0.0/16" || rev < put.Header.Revision {
		t.Fatalf("Config() = %v, %d, %v", cfg, rev, err)
	}
}

// TestRegistryWaitConfig: WaitConfig waits through a missing then an
// invalid config, logging each reason once, and returns the first valid.
func TestRegistryWaitConfig(t *testing.T) {
	t.Parallel()
	_, cli, r, log := regTestEnv(t)
	ctx := regTestCtx(t, 2*regTestWait)
	type result struct {
		cfg *lease.Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := r.WaitConfig(ctx)
		done <- result{cfg, err}
	}()
	await.Until(t, regTestWait, func() string {
		if log.count("network config is missing") != 1 {
			return "missing config not logged:\n" + log.String()
		}
		return ""
	})
	put := func(v string) {
		t.Helper()
		if _, err := cli.Put(ctx, r.ConfigKey(), v); err != nil {
			t.Fatal(err)
		}
	}
	awaitInvalid := func(n int) {
		t.Helper()
		await.Until(t, regTestWait, func() string {
			if log.count("network config is invalid") != n {
				return fmt.Sprintf("want %d invalid-config errors logged:\n%s", n, log)
			}
			return ""
		})
	}
	put(`{"Network":"10.5.0.0/33"}`)
	awaitInvalid(1)
	// The same reason again is not logged again; a new one is.
	put(`{"Network":"10.5.0.0/33"}`)
	put(`{"Network":"nope"}`)
	awaitInvalid(2)
	select {
	case res := <-done:
		t.Fatalf("WaitConfig returned %v, %v on an invalid config", res.cfg, res.err)
	default:
	}
	if _, err := cli.Put(ctx, r.ConfigKey(), regTestGoodConfig); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.err != nil || res.cfg.Network.String() != "10.5.0.0/16" {
			t.Fatalf("WaitConfig = %v, %v", res.cfg, res.err)
		}
	case <-time.After(regTestWait):
		t.Fatal("WaitConfig did not return after a valid config was written")
	}
	if n := log.count("network config is missing"); n != 1 {
		t.Errorf("missing config logged %d times", n)
	}
}

func TestRegistryWatchConfig(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	ctx, cancel := context.WithCancel(regTestCtx(t, 2*regTestWait))
	ch := r.WatchConfig(ctx)
	next := func() ConfigUpdate {
		t.Helper()
		select {
		case u := <-ch:
			return u
		case <-time.After(regTestWait):
			t.Fatal("no config update")
		}
		return ConfigUpdate{}
	}
	if u := next(); !errors.Is(u.Err, ErrNoConfig) {
		t.Fatalf("initial state: %+v, want ErrNoConfig", u)
	}
	if _, err := cli.Put(ctx, r.ConfigKey(), regTestGoodConfig); err != nil {
		t.Fatal(err)
	}
	if u := next(); u.Err != nil || u.Config.Network.String() != "10.5.0.0/16" || u.Revision == 0 {
		t.Fatalf("after put: %+v", u)
	}
	if _, err := cli.Put(ctx, r.ConfigKey(), `{"Network":"10.6.0.0/33"}`); err != nil {
		t.Fatal(err)
	}
	if u := next(); !errors.Is(u.Err, lease.ErrInvalidConfig) {
		t.Fatalf("after invalid put: %+v", u)
	}
	if _, err := cli.Delete(ctx, r.ConfigKey()); err != nil {
		t.Fatal(err)
	}
	if u := next(); !errors.Is(u.Err, ErrNoConfig) {
		t.Fatalf("after delete: %+v", u)
	}
	cancel()
	regTestAwaitClosed(t, ch, regTestWait)
}
