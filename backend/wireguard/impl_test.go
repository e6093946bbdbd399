package wireguard

import (
	"errors"
	"strings"
	"testing"
)

func TestChoose(t *testing.T) {
	noModule := errors.New("Unknown device type")
	for _, tc := range []struct {
		flag, existing string
		kernelErr      error
		want           string
		reason         string
		tries          bool
	}{
		{flag: "userspace", want: ImplUserspace, reason: "--wireguard-impl=userspace"},
		{flag: "kernel", kernelErr: noModule, want: ImplKernel, reason: "--wireguard-impl=kernel"},
		{flag: "auto", want: ImplKernel, reason: "kernel has WireGuard", tries: true},
		{flag: "", want: ImplKernel, reason: "kernel has WireGuard", tries: true},
		{flag: "auto", kernelErr: noModule, want: ImplUserspace, reason: "Unknown device type", tries: true},
		{flag: "auto", existing: "wireguard", want: ImplKernel, reason: "already there"},
		{flag: "auto", existing: "tuntap", want: ImplUserspace, reason: "re-attaching"},
	} {
		tried := false
		c, err := choose(tc.flag, tc.existing, func() error { tried = true; return tc.kernelErr })
		if err != nil || c.impl != tc.want || !strings.Contains(c.reason, tc.reason) || tried != tc.tries {
			t.Errorf("choose(%q, %q, kernel error %v) = %+v, %v, tried %t; want %s because %q, tried %t",
				tc.flag, tc.existing, tc.kernelErr, c, err, tried, tc.want, tc.reason, tc.tries)
		}
	}
	if _, err := choose("fast", "", nil); err == nil {
		t.Error(`choose("fast"): want an error`)
	}
}
