package kubestore

import (
	"net"
	"net/url"
	"time"

	"github.com/netagent/netagent/subnet/kubestore/kubeinfo"
)

// Info describes a Store for the agent's status (kubeinfo.Info).
type Info = kubeinfo.Info

// InfoCounters are the Store's counters since Open.
type InfoCounters = kubeinfo.InfoCounters

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
