package cniplugin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// About is printed on stderr when the plugin is run without CNI_COMMAND.
const About = "netagent-cni: hands this host's netagent lease to the bridge and host-local CNI plugins"

// SupportedVersions are the CNI spec versions the plugin speaks.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Funcs returns the plugin's verbs for skel.PluginMainFuncs, all running
// under ctx; results go to stdout, warnings to log. The delegates run as
// processes found in CNI_PATH.
func Funcs(ctx context.Context, stdout io.Writer, log *slog.Logger) skel.CNIFuncs {
	p := &plugin{stdout: stdout, log: log}
	return p.funcs(ctx)
}

// cleanupTimeout bounds the delegate DEL that undoes a failed ADD.
const cleanupTimeout = 30 * time.Second

// plugin runs the CNI verbs. Results go to stdout, warnings to log.
type plugin struct {
	stdout io.Writer
	log    *slog.Logger
	// exec runs the delegates; nil runs them as processes found in
	// CNI_PATH.
	exec invoke.Exec
}

// funcs returns the verbs for skel, all running under ctx.
func (p *plugin) funcs(ctx context.Context) skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    func(a *skel.CmdArgs) error { return p.add(ctx, a) },
		Del:    func(a *skel.CmdArgs) error { return p.del(ctx, a) },
		Check:  func(a *skel.CmdArgs) error { return p.check(ctx, a) },
		Status: func(a *skel.CmdArgs) error { return p.status(ctx, a) },
		GC:     func(a *skel.CmdArgs) error { return p.gc(ctx, a) },
	}
}

// prepare parses the netconf and the attachment's cache name.
func prepare(args *skel.CmdArgs) (*netConf, string, error) {
	n, err := parseNetConf(args.StdinData)
	if err != nil {
		return nil, "", err
	}
	name, err := cacheName(args.ContainerID, args.IfName)
	if err != nil {
		return nil, "", err
	}
	return n, name, nil
}

// add builds the delegate config from the subnet file, caches it and runs
// the delegate's ADD. Any failure after the cache is written runs the
// delegate's DEL and removes the cache file, so nothing is left behind.
func (p *plugin) add(ctx context.Context, args *skel.CmdArgs) error {
	n, name, err := prepare(args)
	if err != nil {
		return err
	}
	prev, err := parsePrevResult(n)
	if err != nil {
		return err
	}
	info, err := readSubnetFile(n.SubnetFile)
	if err != nil {
		return err
	}
	if _, err := invoke.FindInPath(n.delegateType, filepath.SplitList(args.Path)); err != nil {
		return errf(types.ErrInvalidNetworkConfig, "delegate type %q: %v", n.delegateType, err)
	}
	conf, err := buildDelegate(n, info)
	if err != nil {
		return err
	}
	c := cache{dir: n.DataDir}
	if err := c.write(name, conf); err != nil {
		return errf(types.ErrIOFailure, "caching the delegate config: %v", err)
	}
	out, err := p.addDelegate(ctx, n, conf, prev)
	if err != nil {
		p.undoAdd(ctx, n.delegateType, conf, c, name)
		return err
	}
	if _, err := p.stdout.Write(out); err != nil {
		p.undoAdd(ctx, n.delegateType, conf, c, name)
		return errf(types.ErrIOFailure, "writing the result: %v", err)
	}
	return nil
}

// addDelegate runs the delegate's ADD and returns the result to print: the
// delegate's, appended to prev when there is one, in the netconf's version.
func (p *plugin) addDelegate(ctx context.Context, n *netConf, conf []byte, prev *types100.Result) ([]byte, error) {
	res, err := invoke.DelegateAdd(ctx, n.delegateType, conf, p.exec)
	if err != nil {
		return nil, delegateError("ADD", n.delegateType, err)
	}
	if prev != nil {
		cur, err := types100.NewResultFromResult(res)
		if err != nil {
			return nil, errf(types.ErrDecodingFailure, "delegate %s ADD result: %v", n.delegateType, err)
		}
		res = mergeResult(prev, cur)
	}
	res, err = res.GetAsVersion(n.CNIVersion)
	if err != nil {
		return nil, errf(types.ErrIncompatibleCNIVersion, "converting the result to version %s: %v", n.CNIVersion, err)
	}
	var b bytes.Buffer
	if err := res.PrintTo(&b); err != nil {
		return nil, errf(types.ErrInternal, "encoding the result: %v", err)
	}
	return b.Bytes(), nil
}

// undoAdd runs the delegate's DEL for a failed ADD and removes the cache
// file. It runs even when ctx is cancelled, for cleanupTimeout at most.
func (p *plugin) undoAdd(ctx context.Context, typ string, conf []byte, c cache, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := invoke.DelegateDel(ctx, typ, conf, p.exec); err != nil {
		p.log.Warn("undoing a failed ADD: delegate DEL failed", "delegate", typ, "attachment", name, "err", err)
	}
	if err := c.remove(name); err != nil {
		p.log.Warn("undoing a failed ADD: removing the cached config failed", "attachment", name, "err", err)
	}
}

// del runs the delegate's DEL with the cached config, then removes it. With
// no (readable) cache it builds the config from the subnet file, so that a
// DEL after a lost cache still releases the address; with neither, there is
// nothing this plugin can clean and DEL succeeds, as the spec requires.
func (p *plugin) del(ctx context.Context, args *skel.CmdArgs) error {
	n, name, err := prepare(args)
	if err != nil {
		return err
	}
	c := cache{dir: n.DataDir}
	conf, err := c.read(name)
	var h delegateHeader
	switch {
	case err == nil:
		if h, err = parseDelegateHeader(conf); err != nil {
			p.log.Warn("ignoring an unreadable cached config", "attachment", name, "err", err)
			conf = nil
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return errf(types.ErrIOFailure, "reading the cached config: %v", err)
	}
	if conf == nil {
		info, err := readSubnetFile(n.SubnetFile)
		if err != nil {
			p.log.Info("no cached config and no usable subnet file: nothing to clean", "attachment", name, "err", err)
			return c.removeOrErr(name)
		}
		if conf, err = buildDelegate(n, info); err != nil {
			return err
		}
		h = delegateHeader{Type: n.delegateType}
	}
	if err := invoke.DelegateDel(ctx, h.Type, conf, p.exec); err != nil {
		return delegateError("DEL", h.Type, err)
	}
	return c.removeOrErr(name)
}

// check needs the cached config and prevResult: the container's addresses
// in prevResult must lie inside the current lease, and the delegate's CHECK
// (given prevResult) must pass.
func (p *plugin) check(ctx context.Context, args *skel.CmdArgs) error {
	n, name, err := prepare(args)
	if err != nil {
		return err
	}
	prev, err := parsePrevResult(n)
	if err != nil {
		return err
	}
	if prev == nil {
		return errf(types.ErrInvalidNetworkConfig, "CHECK needs prevResult")
	}
	conf, err := cache{dir: n.DataDir}.read(name)
	if errors.Is(err, fs.ErrNotExist) {
		return errf(types.ErrUnknownContainer, "no cached config for container %s interface %s in %s: it was not added by this plugin", args.ContainerID, args.IfName, n.DataDir)
	}
	if err != nil {
		return errf(types.ErrIOFailure, "reading the cached config: %v", err)
	}
	h, err := parseDelegateHeader(conf)
	if err != nil {
		return errf(types.ErrDecodingFailure, "cached config of %s: %v", name, err)
	}
	info, err := readSubnetFile(n.SubnetFile)
	if err != nil {
		return err
	}
	if err := checkLease(prev, info, args.IfName); err != nil {
		return err
	}
	part, err := delegatePart(prev, args.IfName).GetAsVersion(n.CNIVersion)
	if err != nil {
		return errf(types.ErrIncompatibleCNIVersion, "prevResult for the delegate: %v", err)
	}
	set := map[string]any{"cniVersion": n.CNIVersion, "prevResult": part}
	if n.RuntimeConfig != nil {
		set["runtimeConfig"] = n.RuntimeConfig
	}
	conf, err = withKeys(conf, set)
	if err != nil {
		return errf(types.ErrDecodingFailure, "cached config of %s: %v", name, err)
	}
	if err := invoke.DelegateCheck(ctx, h.Type, conf, p.exec); err != nil {
		return delegateError("CHECK", h.Type, err)
	}
	return nil
}
