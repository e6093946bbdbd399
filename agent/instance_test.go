package agent

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestInstanceNaming(t *testing.T) {
	if id := InstanceID(DefaultEtcdPrefix); id != "" {
		t.Errorf("default instance id %q, want empty", id)
	}
	if id := InstanceID(DefaultEtcdPrefix + "/"); id != "" {
		t.Errorf("default prefix with a trailing slash: id %q, want empty", id)
	}
	// flannel's packages on Atomic, Fedora and CentOS use /atomic.io/network:
	// a host switched from them keeps flannel's names, chains included.
	if id := InstanceID("/atomic.io/network/"); id != "" || ProbePortFor("/atomic.io/network") != 8473 || StatusSocketFor("/atomic.io/network") != DefaultStatusSocket {
		t.Errorf("/atomic.io/network: id %q, port %d, socket %q; want the default instance's", id, ProbePortFor("/atomic.io/network"), StatusSocketFor("/atomic.io/network"))
	}
	a, b := InstanceID("/a/network"), InstanceID("/b/network")
	if !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(a) || a == b || InstanceID("/a/network/") != a {
		t.Errorf("ids %q %q (%q with a slash): want 8 hex digits, distinct, slash-insensitive", a, b, InstanceID("/a/network/"))
	}
	if s := StatusSocketFor("/a/network"); s != "/run/netagent/netagent-"+a+".sock" {
		t.Errorf("status socket %q", s)
	}
	if StatusSocketFor(DefaultEtcdPrefix) != DefaultStatusSocket || ProbePortFor(DefaultEtcdPrefix) != 8473 {
		t.Errorf("default instance: %q %d", StatusSocketFor(DefaultEtcdPrefix), ProbePortFor(DefaultEtcdPrefix))
	}
	for i := range 200 {
		if p := ProbePortFor(fmt.Sprintf("/net%d", i)); p < 8474 || p > 9473 {
			t.Fatalf("probe port %d out of 8474-9473", p)
		}
	}
	if n := MasqNames("/a/network"); n.PostRouting != "FLANNEL-POSTRTG-"+a || n.Table != "netagent_"+a {
		t.Errorf("masq names %+v", n)
	}
	if n := MasqNames(DefaultEtcdPrefix); n.PostRouting != "FLANNEL-POSTRTG" || n.Forward != "FLANNEL-FWD" || n.Table != "netagent" {
		t.Errorf("default masq names %+v", n)
	}
}

// The instance lock is an abstract socket: it takes no file and no kernel
// entry, so the test runs in the test's own namespace, under a prefix of
// its own.
func TestInstanceLockNamesHolder(t *testing.T) {
	prefix := fmt.Sprintf("/test-%d-%s/network", os.Getpid(), t.Name())
	l, err := lockInstance(prefix)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockInstance(prefix + "/")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("process %d", os.Getpid())) || !strings.Contains(err.Error(), prefix) {
		t.Fatalf("second lock: %v; want an error naming process %d and the prefix", err, os.Getpid())
	}
	other, err := lockInstance(prefix + "2")
	if err != nil {
		t.Fatalf("another prefix's lock: %v", err)
	}
	other.Close()
	l.Close()
	l, err = lockInstance(prefix)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l.Close()
}
