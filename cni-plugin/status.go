package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// readyTimeout bounds STATUS's request to the agent.
const readyTimeout = 2 * time.Second

// status reports whether the plugin can ADD: the subnet file must be there
// and parse, the agent must answer 200 on GET /readyz over its status socket
// (no socket, as on a node that runs flannel, is "not serving"), the
// delegate must be in CNI_PATH and its STATUS must pass. Not ready is code
// 50, plugin not available; a failing delegate STATUS keeps its own code.
func (p *plugin) status(ctx context.Context, args *skel.CmdArgs) error {
	n, err := parseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	info, err := readSubnetFile(n.SubnetFile)
	if err != nil {
		return errf(types.ErrPluginNotAvailable, "not ready: %v", err)
	}
	if err := probeReady(ctx, n.StatusSocket); err != nil {
		return errf(types.ErrPluginNotAvailable, "not ready: netagent is not serving: %v", err)
	}
	if _, err := invoke.FindInPath(n.delegateType, filepath.SplitList(args.Path)); err != nil {
		return errf(types.ErrPluginNotAvailable, "not ready: delegate %q: %v", n.delegateType, err)
	}
	conf, err := buildDelegate(n, info)
	if err != nil {
		return err
	}
	if err := invoke.DelegateStatus(ctx, n.delegateType, conf, p.exec); err != nil {
		return delegateError("STATUS", n.delegateType, err)
	}
	return nil
}

// probeReady asks the agent GET /readyz over the unix socket at path and
// wants 200, within readyTimeout.
func probeReady(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://unix/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr interface{ Unwrap() error }
		if errors.As(err, &uerr) {
			err = uerr.Unwrap()
		}
		return fmt.Errorf("GET /readyz on %s: %w", path, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /readyz on %s: %s", path, resp.Status)
	}
	return nil
}
