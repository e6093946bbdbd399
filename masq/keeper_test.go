package masq

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
)

// runKeeper runs k in the namespace; stop (also called when the test
// ends) cancels it and checks that Run returns nil.
func runKeeper(t *testing.T, n *testNS, k *Keeper) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		// Run executes iptables and nft from this locked thread, inside n.
		done <- n.Do(func() error { return k.Run(ctx) })
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Keeper.Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Keeper.Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestKeeperRepairsAndUpdates(t *testing.T) {
	for _, backend := range []string{"iptables", "nftables"} {
		t.Run(backend, func(t *testing.T) {
			guardRoot(t)
			n := newNS(t)
			var (
				m      Manager
				tamper []string
			)
			n.do(t, func() (err error) {
				if backend == "iptables" {
					m, err = NewIPTables(testLogger(t))
					tamper = []string{"iptables", "-t", "nat", "-D", ChainPostrouting, "1"}
				} else {
					m, err = NewNFTables(testLogger(t))
					tamper = []string{"nft", "flush", "chain", "ip", NFTable, "postrouting"}
				}
				return err
			})
			check := func(r Rules) func() string {
				return func() string {
					var (
						ok     bool
						reason string
					)
					n.do(t, func() (err error) {
						ok, reason, err = m.Check(t.Context(), r)
						return err
					})
					if ok {
						return ""
					}
					return fmt.Sprintf("rules not in place: %s", reason)
				}
			}

			// The waits below are on the keeper's passes; their deadline
			// only bounds a hang (passes queue behind the xtables lock
			// that every test of the machine shares).
			const hang = time.Minute
			// applied waits until k has applied the rules n times.
			applied := func(k *Keeper, n uint64) {
				t.Helper()
				await.Until(t, hang, func() string {
					if got := k.Applied(); got < n {
						return fmt.Sprintf("the keeper applied the rules %d times, want %d", got, n)
					}
					return ""
				})
			}
			inPlace := func(r Rules) {
				t.Helper()
				if msg := check(r)(); msg != "" {
					t.Fatal(msg)
				}
			}

			k := NewKeeper(testLogger(t), m, rulesA, 200*time.Millisecond)
			stop := runKeeper(t, n, k)
			applied(k, 1)
			inPlace(rulesA)
			// Others delete a rule: a pass puts it back. The pass under
			// way when the rule went may have looked before; the one
			// after it started after.
			n.sh(t, tamper...)
			applied(k, k.Applied()+2)
			inPlace(rulesA)
			stop()

			// A new lease: Update applies at once, not after the interval.
			k = NewKeeper(testLogger(t), m, rulesA, time.Hour)
			runKeeper(t, n, k)
			applied(k, 1)
			inPlace(rulesA)
			// The keeper now waits for the hour or a kick: its next pass
			// is Update's.
			before := k.Applied()
			k.Update(rulesB)
			applied(k, before+1)
			inPlace(rulesB)
			if got := k.Rules(); got != rulesB {
				t.Errorf("Rules() = %v, want %v", got, rulesB)
			}
		})
	}
}

func TestKeeperRejectsBadInterval(t *testing.T) {
	err := Keep(t.Context(), testLogger(t), nil, rulesA, 0)
	if err == nil {
		t.Fatal("Keep with interval 0 returned nil")
	}
}
