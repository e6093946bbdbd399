package main

import (
	"strings"
	"testing"
)

func TestEtcdOptionsValidate(t *testing.T) {
	base := func() etcdOptions {
		return etcdOptions{name: "m1", dataDir: "/nonexistent", listenClientURLs: "http://192.168.77.2:2379",
			listenPeerURLs: "http://192.168.77.2:2380"}
	}
	for _, tt := range []struct {
		name    string
		edit    func(*etcdOptions)
		wantErr string
	}{
		{"single member", func(*etcdOptions) {}, ""},
		{"cluster member", func(o *etcdOptions) {
			o.initialCluster = "m1=http://192.168.77.2:2380,m2=http://192.168.77.3:2380"
			o.initialClusterState = "existing"
			o.advertisePeerURLs = "http://192.168.77.2:2380"
		}, ""},
		{"bad cluster state", func(o *etcdOptions) { o.initialClusterState = "joining" }, "--initial-cluster-state"},
		{"https peer URL", func(o *etcdOptions) { o.advertisePeerURLs = "https://192.168.77.2:2380" }, "--initial-advertise-peer-urls"},
		{"TLS client URLs", func(o *etcdOptions) {
			o.listenClientURLs = "https://192.168.77.2:2379"
			o.certFile, o.keyFile, o.trustedCAFile, o.clientCertAuth = "s.pem", "s-key.pem", "ca.pem", true
		}, ""},
		{"cert without key", func(o *etcdOptions) { o.certFile = "s.pem" }, "--cert-file and --key-file"},
		{"client auth without CA", func(o *etcdOptions) {
			o.certFile, o.keyFile, o.clientCertAuth = "s.pem", "s-key.pem", true
		}, "--client-cert-auth"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.edit(&o)
			err := o.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}
