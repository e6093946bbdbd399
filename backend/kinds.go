package backend

import (
	"fmt"
	"strings"

	"github.com/netagent/netagent/lease"
)

// Kind is one type of backend: the name the network config selects it by,
// how its fields of the config are checked, and how it is built.
type Kind struct {
	// Type is the config's Backend.Type and the leases' BackendType.
	Type string
	// Validate checks the config's Backend object as New will, touching
	// nothing, for `netagent config check/set`; nil when the backend has
	// no fields of its own.
	Validate func(cfg *lease.Config) error
	// New builds the backend from opts; it touches no kernel state.
	New func(opts Options) (Backend, error)
}

// Kinds is the backends an agent supports, in the order they are listed to
// the user. It is built explicitly by the command (no registration from
// init): adding a backend is adding one entry there.
type Kinds []Kind

// Lookup returns the Kind whose Type is typ, or an error wrapping
// lease.ErrInvalidConfig that names the supported types.
func (ks Kinds) Lookup(typ string) (Kind, error) {
	for _, k := range ks {
		if k.Type == typ {
			return k, nil
		}
	}
	return Kind{}, fmt.Errorf("%w: Backend.Type %q is not supported by netagent (supported: %s)", lease.ErrInvalidConfig, typ, ks)
}

// Validate checks that cfg's backend is supported and that its fields are
// valid for it.
func (ks Kinds) Validate(cfg *lease.Config) error {
	k, err := ks.Lookup(cfg.BackendType)
	if err != nil || k.Validate == nil {
		return err
	}
	return k.Validate(cfg)
}

// String lists the types, as "vxlan, host-gw".
func (ks Kinds) String() string {
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k.Type
	}
	return strings.Join(names, ", ")
}

// Construct adapts a backend package's New, which returns its concrete
// type, to Kind.New (and returns a nil Backend, not a typed nil, on error).
func Construct[B Backend](newBackend func(Options) (B, error)) func(Options) (Backend, error) {
	return func(opts Options) (Backend, error) {
		b, err := newBackend(opts)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}
