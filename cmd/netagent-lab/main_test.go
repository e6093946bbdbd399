package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestRunArguments(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantUsage bool   // a usageError
		wantHelp  bool   // flag.ErrHelp
		wantOut   string // in stdout
		wantErr   string // in the error
	}{
		{name: "no command", args: nil, wantUsage: true, wantErr: "no command"},
		{name: "unknown command", args: []string{"frobnicate"}, wantUsage: true, wantErr: `"frobnicate"`},
		{name: "help", args: []string{"help"}, wantOut: "commands:"},
		{name: "etcd help", args: []string{"etcd", "-h"}, wantHelp: true},
		{name: "etcd without data dir", args: []string{"etcd"}, wantUsage: true, wantErr: "--data-dir is required"},
		{name: "etcd bad flag", args: []string{"etcd", "--bogus"}, wantUsage: true, wantErr: "bogus"},
		{name: "etcd bad url", args: []string{"etcd", "--data-dir", "/nonexistent", "--listen-client-urls", "192.168.77.2:2379"}, wantUsage: true, wantErr: "--listen-client-urls"},
		{name: "etcd https url", args: []string{"etcd", "--data-dir", "/nonexistent", "--listen-peer-urls", "https://127.0.0.1:2380"}, wantUsage: true, wantErr: "want http://host:port"},
		{name: "etcd extra argument", args: []string{"etcd", "--data-dir", "/nonexistent", "extra"}, wantUsage: true, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			var u usageError
			if got := errors.As(err, &u); got != tt.wantUsage {
				t.Errorf("run(%q) = %v; usage error %v, want %v", tt.args, err, got, tt.wantUsage)
			}
			if got := errors.Is(err, flag.ErrHelp); got != tt.wantHelp {
				t.Errorf("run(%q) = %v; ErrHelp %v, want %v", tt.args, err, got, tt.wantHelp)
			}
			if !tt.wantUsage && !tt.wantHelp && err != nil {
				t.Errorf("run(%q) = %v, want nil", tt.args, err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tt.wantOut)
			}
		})
	}
}
