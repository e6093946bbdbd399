package main

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// The settings of a host that ran flanneld from its distribution's package
// (Project Atomic, Fedora, CentOS): /etc/sysconfig/flanneld holds these
// variables, and flanneld.service passed them as
//
//	flanneld -etcd-endpoints=${FLANNEL_ETCD_ENDPOINTS} -etcd-prefix=${FLANNEL_ETCD_PREFIX} $FLANNEL_OPTIONS
//
// (older packages: FLANNEL_ETCD and FLANNEL_ETCD_KEY, which their
// flanneld-start script used when the newer names were unset).
// netagent.service reads the same files, so the agent maps them itself;
// see docs/migrating-from-flannel.md.
//
// They reached flanneld as command-line flags, which win over FLANNELD_*;
// FLANNEL_OPTIONS came last on that command line, so its flags won over the
// two others. netagent keeps that order below NETAGENT_*: a host switched
// in place sees the settings flanneld saw.

// flannelOptionsEnv holds extra flanneld flags, split at whitespace as
// systemd splits $FLANNEL_OPTIONS in ExecStart= (no quoting).
const flannelOptionsEnv = "FLANNEL_OPTIONS"

// flannelPackagingEnv maps a flag to its packaging variables, the first
// set one winning.
var flannelPackagingEnv = map[string][]string{
	"etcd-endpoints": {"FLANNEL_ETCD_ENDPOINTS", "FLANNEL_ETCD"},
	"etcd-prefix":    {"FLANNEL_ETCD_PREFIX", "FLANNEL_ETCD_KEY"},
}

// flanneldLogFlags are flanneld's logging flags (klog's), which netagent
// does not have. In FLANNEL_OPTIONS they are ignored with a warning, as
// they change only what flanneld logged; any other flag netagent lacks is
// an error, as ignoring it could change what the host does.
var flanneldLogFlags = map[string]bool{ // name: is a boolean flag
	"v": false, "vmodule": false, "log_dir": false, "log_file": false,
	"log_file_max_size": false, "stderrthreshold": false, "log_backtrace_at": false,
	"logtostderr": true, "alsologtostderr": true, "skip_headers": true,
	"skip_log_headers": true, "add_dir_header": true, "one_output": true,
}

// recordedFlag is a flag of the FLANNEL_OPTIONS parser: it keeps the
// values given, for fromEnv to apply to the real flag.
type recordedFlag struct {
	name   string
	isBool bool
	vals   map[string][]string
}

func (r recordedFlag) String() string   { return "" }
func (r recordedFlag) IsBoolFlag() bool { return r.isBool }
func (r recordedFlag) Set(v string) error {
	r.vals[r.name] = append(r.vals[r.name], v)
	return nil
}

// parseFlannelOptions parses value, the content of FLANNEL_OPTIONS, as
// flags of fs (with one dash or two, as flanneld took them), and returns
// each flag's values in order, without setting them. Flags fs lacks are an
// error, except flanneld's logging flags, which are warned about.
func parseFlannelOptions(fs *flag.FlagSet, value string) (map[string][]string, []string, error) {
	args := strings.Fields(value)
	if len(args) == 0 {
		return nil, nil, nil
	}
	vals := map[string][]string{}
	ignored := map[string][]string{}
	rec := flag.NewFlagSet(flannelOptionsEnv, flag.ContinueOnError)
	rec.SetOutput(io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		bf, isBool := f.Value.(interface{ IsBoolFlag() bool })
		rec.Var(recordedFlag{name: f.Name, isBool: isBool && bf.IsBoolFlag(), vals: vals}, f.Name, "")
	})
	for name, isBool := range flanneldLogFlags {
		if rec.Lookup(name) == nil {
			rec.Var(recordedFlag{name: name, isBool: isBool, vals: ignored}, name, "")
		}
	}
	if err := rec.Parse(args); err != nil {
		// The value is not quoted: it may hold -etcd-password.
		return nil, nil, fmt.Errorf("%s: %w (netagent has no such flag; see 'netagent run -h')", flannelOptionsEnv, err)
	}
	if rec.NArg() > 0 {
		return nil, nil, fmt.Errorf("%s: unexpected argument %q (flags only)", flannelOptionsEnv, rec.Arg(0))
	}
	var warnings []string
	for name := range ignored {
		warnings = append(warnings, fmt.Sprintf("%s: flanneld's logging flag -%s is ignored (netagent logs with --log-level)", flannelOptionsEnv, name))
	}
	sort.Strings(warnings)
	return vals, warnings, nil
}
