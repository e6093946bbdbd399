package kubelab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Identities of an API server's token file.
const (
	// AdminUser is in group system:masters: allowed everything.
	AdminUser = "kubetest-admin"
	// AgentUser is the agent's identity: allowed nothing until a role is
	// bound to it.
	AgentUser = "netagent"
)

// certValidity is how long the serving certificate is valid: a lab may
// stay up for days.
const certValidity = 365 * 24 * time.Hour

// Credentials are the files an API server and its clients need, written
// into one directory: a CA and the serving certificate it signed, a
// service-account key pair, and a token file with a bearer token for
// AdminUser and AgentUser.
type Credentials struct {
	// CAPEM is the CA certificate, PEM-encoded.
	CAPEM []byte
	// Tokens holds each identity's bearer token.
	Tokens map[string]string
	// CertFile and KeyFile are the serving certificate and its key;
	// SAKeyFile and SAPubFile the service-account key pair; TokenFile
	// the --token-auth-file.
	CertFile, KeyFile, SAKeyFile, SAPubFile, TokenFile string
}

// NewCredentials writes new credentials into dir (mode 0600); the serving
// certificate is valid for hosts (IP addresses or DNS names).
func NewCredentials(dir string, hosts ...string) (*Credentials, error) {
	c := &Credentials{
		Tokens:    map[string]string{},
		CertFile:  filepath.Join(dir, "apiserver.pem"),
		KeyFile:   filepath.Join(dir, "apiserver-key.pem"),
		SAKeyFile: filepath.Join(dir, "sa-key.pem"),
		SAPubFile: filepath.Join(dir, "sa.pem"),
		TokenFile: filepath.Join(dir, "tokens.csv"),
	}
	var csv strings.Builder
	for _, u := range []string{AdminUser, AgentUser} {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("kubelab: %w", err)
		}
		c.Tokens[u] = fmt.Sprintf("%x", b)
		// token,user,uid[,"groups"]
		fmt.Fprintf(&csv, "%s,%s,%s", c.Tokens[u], u, u)
		if u == AdminUser {
			csv.WriteString(",system:masters")
		}
		csv.WriteString("\n")
	}
	if err := c.writeCerts(hosts); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kubelab: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("kubelab: %w", err)
	}
	saKeyPEM, err := keyPEM(saKey)
	if err != nil {
		return nil, err
	}
	for path, data := range map[string][]byte{
		c.SAKeyFile: saKeyPEM,
		c.SAPubFile: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		c.TokenFile: []byte(csv.String()),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("kubelab: %w", err)
		}
	}
	return c, nil
}

// writeCerts makes a CA and a serving certificate for hosts, ECDSA P-256.
func (c *Credentials) writeCerts(hosts []string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("kubelab: %w", err)
	}
	caTmpl := certTemplate("netagent lab CA")
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("kubelab: CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("kubelab: CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("kubelab: %w", err)
	}
	tmpl := certTemplate("kube-apiserver")
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("kubelab: serving certificate: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	c.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for path, data := range map[string][]byte{
		c.CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		c.KeyFile:  kp,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return fmt.Errorf("kubelab: %w", err)
		}
	}
	return nil
}

func certTemplate(name string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
	}
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("kubelab: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// WriteKubeconfig writes a kubeconfig file at path for server (a URL)
// whose certificate caPEM signed, authenticating with a bearer token.
func WriteKubeconfig(path, server string, caPEM []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: user}
	cfg.CurrentContext = "lab"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubelab: write %s: %w", path, err)
	}
	return nil
}
