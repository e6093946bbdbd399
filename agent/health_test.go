package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/lease"
)

type fakeHolder struct {
	lease   lease.Lease
	renewed time.Time
}

func (f fakeHolder) Lease() lease.Lease     { return f.lease }
func (f fakeHolder) LastRenewal() time.Time { return f.renewed }

// fakeBackend answers Status only; the other methods are not called.
type fakeBackend struct {
	backend.Backend
	lastPass time.Time
}

func (f fakeBackend) Status() backend.Status { return backend.Status{LastPass: f.lastPass} }

func TestHealth(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	const margin, resync = time.Hour, 30 * time.Second
	expiring := func(left time.Duration) lease.Lease {
		return lease.Lease{Subnet: netip.MustParsePrefix("10.5.1.0/24"), Expiration: now.Add(left)}
	}
	healthy := func() *state {
		return &state{
			lease:       &lease.Lease{},
			holder:      fakeHolder{lease: expiring(20 * time.Hour), renewed: now.Add(-4 * time.Hour)},
			filesAt:     now.Add(-time.Minute),
			backend:     fakeBackend{lastPass: now.Add(-10 * time.Second)},
			etcdContact: now.Add(-5 * time.Second),
		}
	}
	for _, tc := range []struct {
		name   string
		change func(s *state)
		failed []string // names of the failing checks
	}{
		{"healthy", func(*state) {}, nil},
		{"etcd silent beyond the margin", func(s *state) {
			s.etcdContact = now.Add(-margin - time.Second)
			s.etcdErr = "context deadline exceeded"
		}, []string{CheckEtcd}},
		{"a recent renewal counts as contact", func(s *state) {
			s.etcdContact = now.Add(-2 * margin)
			s.holder = fakeHolder{lease: expiring(20 * time.Hour), renewed: now.Add(-time.Minute)}
		}, nil},
		{"etcd never answered", func(s *state) {
			s.etcdContact = time.Time{}
			s.holder = fakeHolder{lease: expiring(20 * time.Hour)}
		}, []string{CheckEtcd}},
		{"lease expiring unrenewed", func(s *state) {
			s.holder = fakeHolder{lease: expiring(margin / 4), renewed: now.Add(-23 * time.Hour)}
		}, []string{CheckLease}},
		{"lease expired", func(s *state) {
			s.holder = fakeHolder{lease: expiring(-time.Second), renewed: now.Add(-23 * time.Hour)}
		}, []string{CheckLease}},
		{"reservation never expires", func(s *state) {
			l := expiring(-time.Hour)
			l.Reservation = true
			s.holder = fakeHolder{lease: l, renewed: now.Add(-time.Minute)}
		}, nil},
		{"reconcile stalled", func(s *state) {
			s.backend = fakeBackend{lastPass: now.Add(-4 * resync)}
		}, []string{CheckReconcile}},
		{"not ready", func(s *state) {
			s.lease, s.holder, s.filesAt, s.backend = nil, nil, time.Time{}, nil
		}, []string{CheckLease, CheckFiles, CheckDataplane}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := healthy()
			tc.change(s)
			var failed []string
			for _, c := range s.health(now, margin, resync) {
				if !c.OK {
					failed = append(failed, c.Name)
					if c.Why == "" {
						t.Errorf("check %s failed without a reason", c.Name)
					}
				}
			}
			if strings.Join(failed, ",") != strings.Join(tc.failed, ",") {
				t.Errorf("failed checks %v, want %v", failed, tc.failed)
			}
		})
	}
}
