package agent

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/certtest"
)

// TestProbeTLS: the TLS check names the cause of a failed handshake with
// etcd: a server certificate of another CA, or a missing client
// certificate; a good configuration and an unreachable endpoint pass.
func TestProbeTLS(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	other := certtest.NewCA(t, "other ca")
	srv := ca.Issue(t, "etcd", "127.0.0.1")
	clientCert := ca.Issue(t, "netagent")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
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
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	for _, tt := range []struct {
		name, addr string
		cfg        *tls.Config
		want       string
	}{
		{"good", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientCert}}, ""},
		{"wrong CA", ln.Addr().String(), &tls.Config{RootCAs: other.Pool(), Certificates: []tls.Certificate{clientCert}}, "certificate signed by unknown authority"},
		{"no client certificate", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool()}, "certificate required"},
		{"unreachable", closedAddr, &tls.Config{RootCAs: ca.Pool()}, ""},
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
