package backend_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/lease"
)

func TestKinds(t *testing.T) {
	errBad := errors.New("bad field")
	kinds := backend.Kinds{
		{Type: "a", Validate: func(cfg *lease.Config) error {
			if string(cfg.Backend) == "bad" {
				return errBad
			}
			return nil
		}},
		{Type: "b"},
	}
	if got := kinds.String(); got != "a, b" {
		t.Errorf("String() = %q, want %q", got, "a, b")
	}
	for _, tc := range []struct {
		cfg  lease.Config
		want error
	}{
		{lease.Config{BackendType: "a", Backend: []byte("good")}, nil},
		{lease.Config{BackendType: "a", Backend: []byte("bad")}, errBad},
		{lease.Config{BackendType: "b", Backend: []byte("bad")}, nil},
		{lease.Config{BackendType: "c"}, lease.ErrInvalidConfig},
	} {
		if err := kinds.Validate(&tc.cfg); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("Validate(%s %s) = %v, want %v", tc.cfg.BackendType, tc.cfg.Backend, err, tc.want)
		}
	}
	if _, err := kinds.Lookup("c"); err == nil || !strings.Contains(err.Error(), `"c" is not supported by netagent (supported: a, b)`) {
		t.Errorf("Lookup(c) = %v, want the unsupported type and the supported ones named", err)
	}
	if k, err := kinds.Lookup("b"); err != nil || k.Type != "b" {
		t.Errorf("Lookup(b) = %v, %v", k.Type, err)
	}
}

type failing struct{ backend.Backend }

func TestConstructReturnsUntypedNil(t *testing.T) {
	newFailing := func(backend.Options) (*failing, error) { return nil, errors.New("no") }
	b, err := backend.Construct(newFailing)(backend.Options{})
	if err == nil || b != nil {
		t.Errorf("Construct(failing) = %v, %v; want a nil Backend and the error", b, err)
	}
}
