// Package certtest makes certificates for tests of mutual TLS: a
// certificate authority, server certificates for given IP addresses and
// DNS names, and client certificates, all ECDSA P-256 and valid from an
// hour ago for a day. Keys are generated for each call and never reused.
//
// Failures end the test (t.Fatal): the helpers are for tests only.
package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	// Cert is the self-signed CA certificate and Key its private key.
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA returns a new self-signed CA whose subject's common name is name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	return &CA{Cert: create(t, tmpl, tmpl, key, key), Key: key}
}

// PEM returns the CA certificate, PEM-encoded: the content of a
// trusted-CA file.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Pool returns a certificate pool that holds only the CA certificate, for
// tls.Config.RootCAs or ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue returns a certificate signed by ca, with its key and its parsed
// Leaf, whose subject's common name is name. With no hosts it is a client
// certificate (extended key usage client auth only); with hosts it is a
// server certificate (server and client auth) whose subject alternative
// names are hosts: each an IP address or else a DNS name.
func (ca *CA) Issue(t testing.TB, name string, hosts ...string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert := create(t, tmpl, ca.Cert, key, ca.Key)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// Files are the paths of the PEM files WriteMutualTLS wrote.
type Files struct {
	// CA is the CA certificate (ca.pem).
	CA string
	// ServerCert and ServerKey are the server's certificate and key
	// (server.pem, server-key.pem).
	ServerCert, ServerKey string
	// ClientCert and ClientKey are the client's certificate and key
	// (client.pem, client-key.pem).
	ClientCert, ClientKey string
}

// WriteMutualTLS makes a new CA, a server certificate for hosts (IP
// addresses or DNS names) and a client certificate, both signed by the CA,
// and writes them with their keys into dir, mode 0600: the files a server
// and its clients need for mutual TLS. It returns the CA, to issue more
// certificates or build a pool, and the files' paths.
func WriteMutualTLS(t testing.TB, dir string, hosts ...string) (*CA, Files) {
	t.Helper()
	ca := NewCA(t, "certtest CA")
	f := Files{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
	writeFile(t, f.CA, ca.PEM())
	WriteKeyPair(t, f.ServerCert, f.ServerKey, ca.Issue(t, "server", hosts...))
	WriteKeyPair(t, f.ClientCert, f.ClientKey, ca.Issue(t, "client"))
	return ca, f
}

// WriteKeyPair writes c's certificate chain and its ECDSA key, PEM-encoded,
// to certFile and keyFile, mode 0600: files tls.LoadX509KeyPair reads.
func WriteKeyPair(t testing.TB, certFile, keyFile string, c tls.Certificate) {
	t.Helper()
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("certtest: key of type %T, want *ecdsa.PrivateKey", c.PrivateKey)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var certs []byte
	for _, b := range c.Certificate {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b})...)
	}
	writeFile(t, certFile, certs)
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// template is the part common to every certificate: a random serial
// number, the common name, and the validity.
func template(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
	}
}

// create signs tmpl (holding key's public half) with parent and parentKey
// and parses the result.
func create(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
