package cniplugin

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netagent/netagent/subnetfile"
)

// errf returns a CNI error with the given code (the spec's table, e.g.
// types.ErrInvalidNetworkConfig) and a formatted message.
func errf(code uint, format string, a ...any) *types.Error {
	return types.NewError(code, fmt.Sprintf(format, a...), "")
}

// readSubnetFile reads the agent's subnet file. A missing file is a
// transient condition (the agent has not written it yet): code 11, try
// again later. A malformed one is code 6, any other failure code 5.
func readSubnetFile(path string) (subnetfile.Info, error) {
	info, err := subnetfile.Read(path)
	switch {
	case err == nil:
		return info, nil
	case errors.Is(err, fs.ErrNotExist):
		return info, errf(types.ErrTryAgainLater, "subnet file %s does not exist: netagent has not written this host's lease yet", path)
	case errors.Is(err, subnetfile.ErrMalformed):
		return info, errf(types.ErrDecodingFailure, "%v", err)
	default:
		return info, errf(types.ErrIOFailure, "reading the subnet file: %v", err)
	}
}

// delegateError puts the delegate's name and the verb in front of a
// delegate's error, keeping its CNI code.
func delegateError(verb, typ string, err error) error {
	var e *types.Error
	if errors.As(err, &e) {
		return types.NewError(e.Code, fmt.Sprintf("delegate %s %s: %s", typ, verb, e.Msg), e.Details)
	}
	return errf(types.ErrInternal, "delegate %s %s: %v", typ, verb, err)
}
