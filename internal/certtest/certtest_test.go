package certtest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// handshake runs a TLS handshake over loopback TCP between a server with
// cfgs and a client with cfgc, and returns each side's error.
func handshake(t *testing.T, cfgs, cfgc *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		done <- tls.Server(c, cfgs).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	cli := tls.Client(c, cfgc)
	clientErr = cli.Handshake()
	serverErr = <-done
	return serverErr, clientErr
}

func TestWriteMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, f := WriteMutualTLS(t, dir, "127.0.0.1", "fd00::1", "etcd.test")
	for _, p := range []string{f.CA, f.ServerCert, f.ServerKey, f.ClientCert, f.ClientKey} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p, dir) || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 inside %s", p, st.Mode().Perm(), dir)
		}
	}
	srv, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", f.CA)
	}
	if !pool.Equal(ca.Pool()) {
		t.Errorf("%s is not the returned CA", f.CA)
	}

	leaf := srv.Leaf
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"127.0.0.1", "fd00::1"}) || !slices.Equal(leaf.DNSNames, []string{"etcd.test"}) {
		t.Errorf("server certificate names: IPs %v DNS %v", leaf.IPAddresses, leaf.DNSNames)
	}
	for _, host := range []string{"127.0.0.1", "fd00::1", "etcd.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := cli.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := cli.Leaf.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Error("client certificate verifies as a server certificate")
	}

	serverCfg := &tls.Config{Certificates: []tls.Certificate{srv}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	if serr, cerr := handshake(t, serverCfg, &tls.Config{RootCAs: pool, ServerName: "etcd.test", Certificates: []tls.Certificate{cli}}); serr != nil || cerr != nil {
		t.Errorf("mutual TLS handshake: server %v, client %v", serr, cerr)
	}
}

func TestOtherCARejected(t *testing.T) {
	ca, other := NewCA(t, "ca"), NewCA(t, "other")
	if ca.Cert.Subject.CommonName != "ca" || !ca.Cert.IsCA {
		t.Errorf("CA certificate: CN %q IsCA %v", ca.Cert.Subject.CommonName, ca.Cert.IsCA)
	}
	srv := ca.Issue(t, "server", "127.0.0.1")
	foreign := other.Issue(t, "client")
	serverCfg := &tls.Config{Certificates: []tls.Certificate{srv}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}

	_, cerr := handshake(t, serverCfg, &tls.Config{RootCAs: other.Pool(), ServerName: "127.0.0.1"})
	if cerr == nil || !strings.Contains(cerr.Error(), "certificate signed by unknown authority") {
		t.Errorf("client trusting another CA: %v, want unknown authority", cerr)
	}
	// The client would send no certificate of a CA the server does not
	// name: send it anyway.
	sendForeign := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	serr, _ := handshake(t, serverCfg, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", GetClientCertificate: sendForeign})
	if serr == nil || !strings.Contains(serr.Error(), "certificate signed by unknown authority") {
		t.Errorf("server given a client certificate of another CA: %v, want unknown authority", serr)
	}
}
