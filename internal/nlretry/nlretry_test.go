package nlretry

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestDump(t *testing.T) {
	errOther := errors.New("other")
	interrupted := fmt.Errorf("listing: %w", netlink.ErrDumpInterrupted)
	for _, tt := range []struct {
		name      string
		errs      []error // what the dump returns on each call; nil after the list
		wantCalls int
		wantErr   error
	}{
		{"first call succeeds", nil, 1, nil},
		{"interrupted twice, then succeeds", []error{interrupted, interrupted}, 3, nil},
		{"another error is not retried", []error{errOther}, 1, errOther},
		{"interrupted, then another error", []error{interrupted, errOther}, 2, errOther},
		{"always interrupted", []error{interrupted, interrupted, interrupted, interrupted, interrupted, interrupted}, Attempts, netlink.ErrDumpInterrupted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			got, err := Dump(func() (int, error) {
				calls++
				if calls <= len(tt.errs) {
					return calls, tt.errs[calls-1]
				}
				return calls, nil
			})
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if got != calls {
				t.Errorf("result %d, want the last call's, %d", got, calls)
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
