package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrEtcdRunning and ErrEtcdNotRunning are returned by StartEtcd and
// StopEtcd/KillEtcd when etcd is in the other state.
var (
	ErrEtcdRunning    = errors.New("lab: etcd already running")
	ErrEtcdNotRunning = errors.New("lab: etcd not running")
)

// etcdStopGrace bounds a clean etcd shutdown before it is killed.
const etcdStopGrace = 5 * time.Second

// EtcdEndpoints returns the etcd client URLs as agents in host namespaces
// see them: the IPv4 one, or on an IPv6-only underlay the IPv6 one.
func (l *Lab) EtcdEndpoints() []string {
	if !l.hasV4() {
		return []string{"http://" + netip.AddrPortFrom(EtcdAddrV6, EtcdClientPort).String()}
	}
	return []string{"http://" + netip.AddrPortFrom(EtcdAddr, EtcdClientPort).String()}
}

func (l *Lab) etcdDir() string { return filepath.Join(l.dir, "etcd") }

// StartEtcd starts `netagent-lab etcd` in the etcd namespace, serving
// EtcdEndpoints() with its data in the lab's etcd/ directory, and returns
// once it answers a request from inside the namespace, or with an error
// (including the end of its log) if it exits or ctx is done first. Data
// written before a StopEtcd or KillEtcd is still there after StartEtcd.
func (l *Lab) StartEtcd(ctx context.Context) error {
	if l.labBinary == "" {
		return errors.New("lab: Options.LabBinary is empty: cannot run etcd")
	}
	l.mu.Lock()
	running := l.etcd != nil && !l.etcd.Exited()
	l.mu.Unlock()
	if running {
		return ErrEtcdRunning
	}
	url := l.EtcdEndpoints()[0]
	listen := url
	if l.hasV4() && l.hasV6() {
		listen += ",http://" + netip.AddrPortFrom(EtcdAddrV6, EtcdClientPort).String()
	}
	p, err := l.StartProcess(l.EtcdNS(), nil, l.labBinary, "etcd",
		"--name", l.prefix,
		"--data-dir", filepath.Join(l.etcdDir(), "data"),
		"--listen-client-urls", listen,
		"--listen-peer-urls", "http://127.0.0.1:2380",
	)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.etcd = p
	l.mu.Unlock()
	if err := l.awaitEtcd(ctx, p); err != nil {
		_ = p.Kill()
		return err
	}
	l.log.Info("etcd ready", "endpoint", url, "pid", p.PID())
	return nil
}

// awaitEtcd polls etcd from inside its namespace until it answers.
func (l *Lab) awaitEtcd(ctx context.Context, p *Proc) error {
	cli, err := l.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		attempt, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := cli.Get(attempt, "/netagent-lab/ready")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("lab: etcd exited before it was ready: %v\n%s", p.err, p.Tail(2048))
		case <-ctx.Done():
			return fmt.Errorf("lab: waiting for etcd: %w (last error: %v)\n%s", ctx.Err(), err, p.Tail(2048))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// StopEtcd stops etcd with SIGTERM (SIGKILL after a few seconds) and
// waits for it to exit.
func (l *Lab) StopEtcd() error {
	p, err := l.runningEtcd()
	if err != nil {
		return err
	}
	if p.stop(etcdStopGrace) {
		return fmt.Errorf("lab: etcd ignored SIGTERM for %v: killed", etcdStopGrace)
	}
	return nil
}

// KillEtcd kills etcd with SIGKILL, as a crash would, and waits for it.
func (l *Lab) KillEtcd() error {
	p, err := l.runningEtcd()
	if err != nil {
		return err
	}
	return p.Kill()
}

// RestartEtcd stops etcd if it runs, then starts it again on the same data.
func (l *Lab) RestartEtcd(ctx context.Context) error {
	if err := l.StopEtcd(); err != nil && !errors.Is(err, ErrEtcdNotRunning) {
		return err
	}
	return l.StartEtcd(ctx)
}

// EtcdProc returns the current etcd process, or nil if it was never started.
func (l *Lab) EtcdProc() *Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.etcd
}

func (l *Lab) runningEtcd() (*Proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.etcd == nil || l.etcd.Exited() {
		return nil, ErrEtcdNotRunning
	}
	return l.etcd, nil
}

// EtcdClient returns an etcd client for EtcdEndpoints() whose connections
// are made inside the etcd namespace (see DialInNS), for use by a process
// in the initial namespace. It does not wait for etcd. The caller closes it.
func (l *Lab) EtcdClient() (*clientv3.Client, error) {
	return l.etcdClientIn(l.EtcdNS(), l.EtcdEndpoints())
}
