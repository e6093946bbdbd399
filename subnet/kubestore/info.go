package kubestore

import (
	"net"
	"net/url"
	"time"
)

// Info describes a Store for the agent's status: where it reads, for
// which Node, and what it has seen.
type Info struct {
	// APIServer is the API server's scheme://host:port, without
	// credentials or path.
	APIServer        string `json:"api_server"`
	Node             string `json:"node"`
	AnnotationPrefix string `json:"annotation_prefix"`
	NetConfigPath    string `json:"net_config_path"`
	// Synced is true once the Node informer has listed the Nodes.
	Synced bool `json:"synced"`
	// LastEvent is when the informer last delivered a Node (added,
	// updated, deleted or listed again); zero before the first.
	LastEvent time.Time    `json:"last_event"`
	Counters  InfoCounters `json:"counters"`
}

// InfoCounters are the Store's counters since Open.
type InfoCounters struct {
	// Events are the Node events the informer delivered.
	Events uint64 `json:"events"`
	// Patches are the annotation patches of this host's Node, and
	// PatchFailures the ones that failed.
	Patches       uint64 `json:"patches"`
	PatchFailures uint64 `json:"patch_failures"`
	// WatchErrors are failed lists and watches of Nodes (each followed
	// by a list).
	WatchErrors uint64 `json:"watch_errors"`
	// Losses are disappearances of this host's Node, Restores patches
	// that put back annotations someone removed or changed.
	Losses   uint64 `json:"losses"`
	Restores uint64 `json:"restores"`
}

// Info returns the Store's description and counters now.
func (s *Store) Info() Info {
	i := Info{
		APIServer:        s.apiServer,
		Node:             s.nodeName,
		AnnotationPrefix: s.prefix,
		NetConfigPath:    s.cfgPath,
		Synced:           s.informer.HasSynced(),
		Counters: InfoCounters{
			Events:        s.stats.events.Load(),
			Patches:       s.stats.patches.Load(),
			PatchFailures: s.stats.patchFailures.Load(),
			WatchErrors:   s.stats.watchErrors.Load(),
			Losses:        s.stats.losses.Load(),
			Restores:      s.stats.restores.Load(),
		},
	}
	if ns := s.stats.lastEvent.Load(); ns != 0 {
		i.LastEvent = time.Unix(0, ns)
	}
	return i
}

// event counts a Node event of the informer.
func (s *Store) event() {
	s.stats.events.Add(1)
	s.stats.lastEvent.Store(time.Now().UnixNano())
}

// serverURL reduces a rest.Config's Host (a URL, or host:port) to
// scheme://host:port: no user, password, path or query reaches the
// status. A Host without a scheme is https, as client-go takes it.
func serverURL(host string) string {
	u, err := url.Parse(host)
	if err != nil || u.Scheme == "" || u.Host == "" {
		u, err = url.Parse("https://" + host)
		if err != nil {
			return ""
		}
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if port == "" {
		return u.Scheme + "://" + u.Hostname()
	}
	return (&url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(u.Hostname(), port)}).String()
}
