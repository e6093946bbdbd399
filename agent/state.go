package agent

import (
	"sync"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/masq"
	"github.com/netagent/netagent/subnet"
)

// maxRecentErrors bounds the errors kept for `netagent status`.
const maxRecentErrors = 20

// state is what the agent knows about itself, for the status socket. The
// serving goroutine writes it; HTTP handlers read snapshots.
type state struct {
	mu         sync.Mutex
	started    time.Time
	config     *subnet.Config
	ext        iface.External
	lease      *subnet.Lease
	holder     interface{ LastRenewal() time.Time }
	backend    backend.Backend
	filesAt    time.Time
	masq       masq.Manager
	keeper     *masq.Keeper
	recentErrs []recentError
}

type recentError struct {
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

func (s *state) update(f func(s *state)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *state) recordError(msg string) {
	s.update(func(s *state) {
		s.recentErrs = append(s.recentErrs, recentError{Time: time.Now().UTC(), Message: msg})
		if n := len(s.recentErrs); n > maxRecentErrors {
			s.recentErrs = s.recentErrs[n-maxRecentErrors:]
		}
	})
}
