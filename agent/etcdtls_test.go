package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// TestProbeTLS: the TLS check names the cause of a failed handshake with
// etcd: a server certificate of another CA, or a missing client
// certificate; a good configuration and an unreachable endpoint pass.
func TestProbeTLS(t *testing.T) {
	ca, caKey := tlsTestCert(t, "ca", nil, nil, true)
	other, _ := tlsTestCert(t, "other ca", nil, nil, true)
	srv, srvKey := tlsTestCert(t, "etcd", ca, caKey, false)
	cli, cliKey := tlsTestCert(t, "netagent", ca, caKey, false)
	pool := func(c *x509.Certificate) *x509.CertPool {
		p := x509.NewCertPool()
		p.AddCert(c)
		return p
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool(ca),
		NextProtos:   []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				c.Read(make([]byte, 1))
			}()
		}
	}()
	clientCert := tls.Certificate{Certificate: [][]byte{cli.Raw}, PrivateKey: cliKey}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	for _, tt := range []struct {
		name, addr string
		cfg        *tls.Config
		want       string
	}{
		{"good", ln.Addr().String(), &tls.Config{RootCAs: pool(ca), Certificates: []tls.Certificate{clientCert}}, ""},
		{"wrong CA", ln.Addr().String(), &tls.Config{RootCAs: pool(other), Certificates: []tls.Certificate{clientCert}}, "certificate signed by unknown authority"},
		{"no client certificate", ln.Addr().String(), &tls.Config{RootCAs: pool(ca)}, "certificate required"},
		{"unreachable", closedAddr, &tls.Config{RootCAs: pool(ca)}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := probeTLS(context.Background(), tt.addr, tt.cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("probeTLS: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("probeTLS = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// tlsTestCert makes a certificate for 127.0.0.1 signed by parent (self
// signed when parent is nil).
func tlsTestCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
