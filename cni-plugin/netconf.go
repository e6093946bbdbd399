package cniplugin

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/netagent/netagent/subnetfile"
)

// Defaults of the netconf keys.
const (
	// defaultDataDirParent holds the per-plugin cache directory,
	// /var/lib/cni/<plugin type>.
	defaultDataDirParent = "/var/lib/cni"
	// defaultType is the plugin's type when the netconf does not say.
	defaultType = "netagent-cni"
	// defaultStatusSocket is where the agent serves /readyz over HTTP.
	defaultStatusSocket = "/run/netagent/netagent.sock"
	// defaultDelegateType is the plugin that creates the interface.
	defaultDelegateType = "bridge"
	// ipamType is the only IPAM plugin the delegate config names: the lease
	// range is host-local's "ranges".
	ipamType = "host-local"
)

// netConf is the plugin's network configuration, read from stdin.
type netConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// SubnetFile is the agent's subnet file (docs/compatibility.md §4.1).
	SubnetFile string `json:"subnetFile"`
	// DataDir holds the cached delegate configs, one per attachment.
	DataDir string `json:"dataDir"`
	// StatusSocket is the agent's unix socket; STATUS asks it GET /readyz.
	StatusSocket string `json:"statusSocket"`
	// Delegate's fields are merged into the delegate config.
	Delegate map[string]any `json:"delegate"`
	// IPAM may add routes and host-local's dataDir; see parseIPAM.
	IPAM map[string]any `json:"ipam"`

	// Set by the runtime.
	RuntimeConfig     map[string]any       `json:"runtimeConfig"`
	RawPrevResult     map[string]any       `json:"prevResult"`
	ValidAttachments  []types.GCAttachment `json:"cni.dev/valid-attachments"`
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments"`

	// Derived by parseNetConf.
	delegateType string
	extraRoutes  []types.Route
	ipamDataDir  string
}

// delegateReserved are the delegate keys the plugin owns: the network's
// name and version, the lease range (ipam) and what the runtime passes.
var delegateReserved = map[string]string{
	"name":                      "the delegate takes the network's name",
	"cniVersion":                "the delegate takes the network's cniVersion",
	"ipam":                      "the address range comes from the subnet file; use the top-level ipam key for routes and dataDir",
	"prevResult":                "it is set by the runtime",
	"cni.dev/valid-attachments": "it is set by the runtime",
	"cni.dev/attachments":       "it is set by the runtime",
}

// parseNetConf decodes and validates the plugin's netconf. Every error is a
// *types.Error: 6 when stdin is not a JSON object of the right shape, 7 when
// a value is not acceptable.
func parseNetConf(data []byte) (*netConf, error) {
	n := &netConf{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep the delegate's numbers as they were written
	if err := dec.Decode(n); err != nil {
		return nil, errf(types.ErrDecodingFailure, "decoding the network config: %v", err)
	}
	if dec.More() {
		return nil, errf(types.ErrDecodingFailure, "decoding the network config: data after the JSON object")
	}
	if err := utils.ValidateNetworkName(n.Name); err != nil {
		return nil, err
	}
	if n.Type == "" {
		n.Type = defaultType
	}
	if !isPlainName(n.Type) {
		return nil, errf(types.ErrInvalidNetworkConfig, "type %q is not a plain file name", n.Type)
	}
	if n.SubnetFile == "" {
		n.SubnetFile = subnetfile.DefaultPath
	}
	if n.DataDir == "" {
		n.DataDir = filepath.Join(defaultDataDirParent, n.Type)
	}
	if n.StatusSocket == "" {
		n.StatusSocket = defaultStatusSocket
	}
	for key, path := range map[string]string{"subnetFile": n.SubnetFile, "dataDir": n.DataDir, "statusSocket": n.StatusSocket} {
		if err := checkPath(key, path); err != nil {
			return nil, err
		}
	}
	if err := n.parseDelegate(); err != nil {
		return nil, err
	}
	if err := n.parseIPAM(); err != nil {
		return nil, err
	}
	return n, nil
}

// parseDelegate checks the delegate object and sets n.delegateType. Any
// delegate type is accepted that is a plain file name (looked up in
// CNI_PATH, as the runtime looks up plugins) other than this plugin's own.
func (n *netConf) parseDelegate() error {
	n.delegateType = defaultDelegateType
	for _, k := range sortedKeys(n.Delegate) {
		if why, ok := delegateReserved[k]; ok {
			return errf(types.ErrInvalidNetworkConfig, "delegate must not set %q: %s", k, why)
		}
	}
	v, ok := n.Delegate["type"]
	if !ok {
		return nil
	}
	typ, ok := v.(string)
	if !ok {
		return errf(types.ErrInvalidNetworkConfig, "delegate type must be a string, not %s", jsonKind(v))
	}
	if !isPlainName(typ) {
		return errf(types.ErrInvalidNetworkConfig, "delegate type %q is not a plain file name (plugins are found in CNI_PATH)", typ)
	}
	if typ == n.Type {
		return errf(types.ErrInvalidNetworkConfig, "delegate type %q is this plugin itself", typ)
	}
	n.delegateType = typ
	return nil
}

// parseIPAM checks the netconf's ipam object. It may hold "routes" (appended
// to the routes to the cluster networks), "dataDir" (host-local's
// reservation directory) and "type" (only "host-local"). Every other key is
// refused: the address range is the lease in the subnet file, nothing else.
func (n *netConf) parseIPAM() error {
	for _, k := range sortedKeys(n.IPAM) {
		v := n.IPAM[k]
		switch k {
		case "type":
			if s, ok := v.(string); !ok || s != ipamType {
				return errf(types.ErrInvalidNetworkConfig, "ipam type must be %q, the plugin that holds the lease range", ipamType)
			}
		case "dataDir":
			s, ok := v.(string)
			if !ok {
				return errf(types.ErrInvalidNetworkConfig, "ipam dataDir must be a string, not %s", jsonKind(v))
			}
			if err := checkPath("ipam dataDir", s); err != nil {
				return err
			}
			n.ipamDataDir = s
		case "routes":
			raw, err := json.Marshal(v)
			if err != nil {
				return errf(types.ErrInvalidNetworkConfig, "ipam routes: %v", err)
			}
			var routes []types.Route
			if err := json.Unmarshal(raw, &routes); err != nil {
				return errf(types.ErrInvalidNetworkConfig, "ipam routes must be a list of {\"dst\":CIDR,\"gw\":IP}: %v", err)
			}
			for i, r := range routes {
				if r.Dst.IP == nil {
					return errf(types.ErrInvalidNetworkConfig, "ipam routes[%d] has no dst", i)
				}
			}
			n.extraRoutes = routes
		default:
			return errf(types.ErrInvalidNetworkConfig, "ipam key %q is not accepted: the address range comes from the subnet file; only routes, dataDir and type %q may be set", k, ipamType)
		}
	}
	return nil
}

// attachments returns the GC's list of still-valid attachments: the spec's
// key, or the misspelt one that older runtimes send.
func (n *netConf) attachments() []types.GCAttachment {
	if n.ValidAttachments != nil {
		return n.ValidAttachments
	}
	return n.LegacyAttachments
}

// checkPath accepts an absolute path without NUL bytes.
func checkPath(key, path string) error {
	if !filepath.IsAbs(path) || strings.ContainsRune(path, 0) {
		return errf(types.ErrInvalidNetworkConfig, "%s %q is not an absolute path", key, path)
	}
	return nil
}

// isPlainName reports whether s names a file in a directory: not empty, no
// path separator, not "." or "..".
func isPlainName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 255 && !strings.ContainsAny(s, "/\\\x00")
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// jsonKind names a decoded JSON value's kind for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	default:
		return "an object"
	}
}
