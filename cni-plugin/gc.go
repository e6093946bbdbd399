package cniplugin

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// gc removes the cached configs of this network's attachments that are not
// in cni.dev/valid-attachments (cache files of other networks sharing the
// data directory are left alone), then runs GC on the delegate and on its
// IPAM plugin with the valid list. The IPAM plugin is called directly
// because bridge does not pass GC on to it: host-local releases the
// addresses of the attachments that are gone.
func (p *plugin) gc(ctx context.Context, args *skel.CmdArgs) error {
	n, err := parseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := n.attachments()
	if valid == nil {
		valid = []types.GCAttachment{}
	}
	keep := make(map[string]bool, len(valid))
	for _, a := range valid {
		if name, err := cacheName(a.ContainerID, a.IfName); err == nil {
			keep[name] = true
		}
	}
	c := cache{dir: n.DataDir}
	names, err := c.list()
	if err != nil {
		return errf(types.ErrIOFailure, "listing the cached configs: %v", err)
	}
	var errs []error
	var cached []byte // a config of this network, for when the subnet file is gone
	for _, name := range names {
		conf, err := c.read(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h, err := parseDelegateHeader(conf)
		if err != nil || h.Name != n.Name {
			continue
		}
		if keep[name] {
			cached = conf
			continue
		}
		if err := c.remove(name); err != nil {
			errs = append(errs, err)
		}
		if cached == nil {
			cached = conf
		}
	}
	derr := p.gcDelegates(ctx, n, valid, cached)
	if len(errs) > 0 {
		return errf(types.ErrIOFailure, "GC of the cached configs: %v", errors.Join(append(errs, derr)...))
	}
	return derr
}

// gcDelegates runs GC on the delegate and its IPAM plugin, with the config
// built from the subnet file, or else a cached config of this network; with
// neither there is nothing to name the delegates by.
func (p *plugin) gcDelegates(ctx context.Context, n *netConf, valid []types.GCAttachment, cached []byte) error {
	conf := cached
	if info, err := readSubnetFile(n.SubnetFile); err == nil {
		if conf, err = buildDelegate(n, info); err != nil {
			return err
		}
	}
	if conf == nil {
		p.log.Warn("GC: no subnet file and no cached config: the delegates are not called", "network", n.Name)
		return nil
	}
	h, err := parseDelegateHeader(conf)
	if err != nil {
		return errf(types.ErrDecodingFailure, "delegate config: %v", err)
	}
	conf, err = withKeys(conf, map[string]any{"cniVersion": n.CNIVersion, "cni.dev/valid-attachments": valid})
	if err != nil {
		return errf(types.ErrDecodingFailure, "delegate config: %v", err)
	}
	var errs []error
	for _, typ := range []string{h.Type, h.IPAM.Type} {
		if typ == "" {
			continue
		}
		if err := invoke.DelegateGC(ctx, typ, conf, p.exec); err != nil {
			errs = append(errs, delegateError("GC", typ, err))
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	default:
		return errf(types.ErrInternal, "%v", errors.Join(errs...))
	}
}
