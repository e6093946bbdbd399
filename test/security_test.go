package test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/certtest"
	"github.com/netagent/netagent/internal/lab"
)

// TestEtcdMutualTLS: etcd requires client certificates; the test makes a
// CA, etcd's server certificate and the agents' client certificate. Agents
// given them serve, and their containers reach each other. An agent given
// another CA, or no client certificate, does not serve and says why.
func TestEtcdMutualTLS(t *testing.T) {
	t.Parallel()
	c := newBareCluster(t, clusterOptions{Hosts: 4})
	dir := t.TempDir()
	ca, pki := certtest.WriteMutualTLS(t, dir, lab.EtcdAddr.String())
	otherCA := filepath.Join(dir, "other-ca.pem")
	if err := os.WriteFile(otherCA, certtest.NewCA(t, "some other CA").PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://%s:%d", lab.EtcdAddr, lab.EtcdClientPort)
	etcd, err := c.lab.StartProcess(c.lab.EtcdNS(), nil, binaries(t)["./cmd/netagent-lab"], "etcd",
		"--name", "tls", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:2380",
		"--cert-file", pki.ServerCert, "--key-file", pki.ServerKey,
		"--trusted-ca-file", pki.CA, "--client-cert-auth")
	if err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 30*time.Second, "etcd with TLS ready", func() error {
		if etcd.Exited() {
			t.Fatalf("etcd exited:\n%s", etcd.Tail(2000))
		}
		if !strings.Contains(etcd.Tail(4096), "etcd ready") {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	c.etcd = nsEtcdClient(t, c.lab.EtcdNS(), url, func(cfg *clientv3.Config) {
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool()}
	})
	c.put(prefix+"/config", vxlanConfig)

	h1, h2, h3, h4 := c.hosts()[0], c.hosts()[1], c.hosts()[2], c.hosts()[3]
	c.opts.AgentArgs = []string{"--etcd-endpoints=" + url, "--etcd-cafile=" + pki.CA,
		"--etcd-certfile=" + pki.ClientCert, "--etcd-keyfile=" + pki.ClientKey}
	c.startAgent(h1)
	c.startAgent(h2)
	c.awaitSubnetFile(h1)
	c.awaitSubnetFile(h2)
	c.opts.AgentArgs = []string{"--etcd-endpoints=" + url, "--etcd-cafile=" + otherCA,
		"--etcd-certfile=" + pki.ClientCert, "--etcd-keyfile=" + pki.ClientKey}
	wrongCA := c.startAgent(h3)
	c.opts.AgentArgs = []string{"--etcd-endpoints=" + url, "--etcd-cafile=" + pki.CA}
	noCert := c.startAgent(h4)

	for _, h := range []*lab.Host{h1, h2} {
		await.Eventually(t, 30*time.Second, h.Name+" ready", func() error { return statusReady(c, h) })
	}
	if err := c.ping(c.addContainer(h1).NS, c.addContainer(h2).IP, pingOpts2); err != nil {
		t.Errorf("over etcd with mutual TLS: %v", err)
	}
	for _, tt := range []struct {
		name string
		p    *lab.Proc
		h    *lab.Host
		want []string
	}{
		{"wrong CA", wrongCA, h3, []string{"certificate signed by unknown authority"}},
		{"no client certificate", noCert, h4, []string{"certificate required"}},
	} {
		line := awaitLog(t, tt.p, logMark{path: tt.p.LogPath}, 30*time.Second, tt.want...)
		t.Logf("%s: %s", tt.name, line)
		if _, err := os.Stat(tt.h.SubnetFile()); err == nil {
			t.Errorf("%s: the agent wrote a subnet file", tt.name)
		}
	}
}

// TestPasswordNeverShown: with etcd authentication on, the password (and a
// wrong one) never appears in the agent's log, its status output or its
// error messages, while the agent serves or says why it cannot.
func TestPasswordNeverShown(t *testing.T) {
	t.Parallel()
	const password, wrong = "pw-Xq7-s3cr3t-9f2", "pw-Wr0ng-77d1"
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := c.etcd.UserAdd(ctx, "root", password); return err },
		func() error { _, err := c.etcd.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.etcd.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable etcd authentication: %v", err)
		}
	}
	h1, h2 := c.hosts()[0], c.hosts()[1]
	pwFile := filepath.Join(h1.Dir, "etcd-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.opts.AgentArgs = []string{"--etcd-username=root", "--etcd-password-file=" + pwFile}
	good := c.startAgent(h1)
	c.awaitSubnetFile(h1)
	await.Eventually(t, 30*time.Second, "h1 ready", func() error { return statusReady(c, h1) })
	c.opts.AgentArgs = []string{"--etcd-username=root", "--etcd-password=" + wrong}
	bad := c.startAgent(h2)
	line := awaitLog(t, bad, logMark{path: bad.LogPath}, 30*time.Second, "authentication failed")
	t.Logf("wrong password: %s", line)

	b := binaries(t)
	// The lab heads each log with the command line it ran: the wrong
	// password is on h2's, as the test passed it (`ps` shows it too: use
	// --etcd-password-file). What the agent wrote follows.
	agentLog := func(p *lab.Proc) string {
		_, after, _ := strings.Cut(readFile(t, p.LogPath), "\n")
		return after
	}
	outputs := map[string]string{
		"h1's log": agentLog(good),
		"h2's log": agentLog(bad),
	}
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		out, err := c.exec(h1.NS, append([]string{b["./cmd/netagent"]}, append(args, "--status-socket="+statusSocket(h1))...)...)
		if err != nil {
			t.Fatalf("netagent %s: %v", strings.Join(args, " "), err)
		}
		outputs["netagent "+strings.Join(args, " ")] = string(out)
	}
	// Errors about the command line.
	for _, args := range [][]string{
		{"run", "--etcd-password=" + password},
		{"run", "--etcd-username=root", "--etcd-password=" + password, "--etcd-password-file=" + pwFile},
		{"run", "--etcd-username=root", "--etcd-password=" + password, "--subnet-lease-ttl=1s"},
	} {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h2.NS, b["./cmd/netagent"]}, args...)...).CombinedOutput()
		cancel()
		if err == nil {
			t.Errorf("netagent %v succeeded", args)
		}
		outputs[fmt.Sprintf("netagent %s", strings.Join(args[1:], " "))] = string(out)
	}
	for what, out := range outputs {
		if strings.Contains(out, password) || strings.Contains(out, wrong) {
			t.Errorf("%s shows the password:\n%s", what, out)
		}
		if len(out) == 0 {
			t.Errorf("%s is empty: nothing was checked", what)
		}
	}
	if !strings.Contains(outputs["h1's log"], "root") {
		t.Errorf("h1's log does not name the etcd user")
	}
}

// TestFileModes: the status socket and the CNI cache are root-only, the
// files Docker and CNI read are world-readable (docs/compatibility.md §4), and a
// crafted container ID cannot make the CNI plugin write outside its cache.
func TestFileModes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 1, Config: vxlanConfig})
	c.startAll()
	c.awaitReady()
	h := c.hosts()[0]
	c.addContainer(h)
	mode := func(path string) (fs.FileMode, uint32) {
		t.Helper()
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode(), st.Sys().(*syscall.Stat_t).Uid
	}
	for _, tt := range []struct {
		path string
		want fs.FileMode
	}{
		{statusSocket(h), fs.ModeSocket | 0o600},
		{h.SubnetFile(), 0o644},
		{filepath.Join(h.Dir, "docker"), 0o644},
	} {
		if m, uid := mode(tt.path); m != tt.want || uid != 0 {
			t.Errorf("%s: mode %v owner %d, want %v owned by root", tt.path, m, uid, tt.want)
		}
	}
	cacheDir := filepath.Join(h.Dir, "cni")
	files := 0
	err := filepath.WalkDir(cacheDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		m, uid := mode(path)
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = fs.ModeDir | 0o700
		} else {
			files++
		}
		if m != want || uid != 0 {
			t.Errorf("CNI cache %s: mode %v owner %d, want %v owned by root", path, m, uid, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no file in the CNI cache %s: nothing checked", cacheDir)
	}

	// Crafted container IDs.
	ctn, err := c.lab.AddContainerNS(c.ctx, h, "crafted")
	if err != nil {
		t.Fatal(err)
	}
	escape := filepath.Join(h.Dir, "escaped")
	for _, id := range []string{"../escaped", "../../" + filepath.Base(h.Dir) + "/escaped", "/" + escape, "a/../../escaped", ".."} {
		stdout, stderr, err := c.runCNI(h, ctn, "ADD", id)
		out := string(stdout) + string(stderr)
		if err == nil {
			t.Errorf("CNI ADD with container ID %q succeeded: %s", id, out)
			continue
		}
		if !strings.Contains(strings.ToLower(out), "containerid") {
			t.Errorf("CNI ADD with container ID %q: error does not name CNI_CONTAINERID: %s", id, out)
		}
	}
	for _, p := range []string{escape, escape + "-eth0", filepath.Join(h.Dir, "escaped-eth0")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// nsEtcdClient returns a client of url whose connections are made inside
// the lab namespace ns, closed when the test ends.
func nsEtcdClient(t *testing.T, ns, url string, opts ...func(*clientv3.Config)) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{
		Endpoints:   []string{url},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return lab.DialInNS(ctx, ns, "tcp", addr)
		})},
	}
	for _, o := range opts {
		o(&cfg)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
