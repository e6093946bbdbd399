package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/netagent/netagent/subnetfile"
)

// AwaitSubnetFile waits until host h's agent has written a valid subnet
// file at h.SubnetFile() with a subnet (IPv4, or IPv6 for an IPv6-only
// network), and returns what it says.
func AwaitSubnetFile(ctx context.Context, h *Host) (subnetfile.Info, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := subnetfile.Read(h.SubnetFile())
		if err == nil && (info.Subnet.IsValid() || info.IPv6Subnet.IsValid()) {
			return info, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return subnetfile.Info{}, fmt.Errorf("lab: %s: %w", h.Name, err)
		}
		select {
		case <-ctx.Done():
			return subnetfile.Info{}, fmt.Errorf("lab: waiting for %s's subnet file %s: %w", h.Name, h.SubnetFile(), ctx.Err())
		case <-tick.C:
		}
	}
}
