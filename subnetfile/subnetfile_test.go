package subnetfile

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var specInfo = Info{
	Network: netip.MustParsePrefix("10.5.0.0/16"),
	Subnet:  netip.MustParsePrefix("10.5.58.0/24"),
	MTU:     1450,
	IPMasq:  true,
}

// The examples of docs/compatibility.md §4, byte for byte.
const (
	specSubnetFile = `FLANNEL_NETWORK=10.5.0.0/16
FLANNEL_SUBNET=10.5.58.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
`
	specDockerOpts = `DOCKER_OPT_BIP="--bip=10.5.58.1/24"
DOCKER_OPT_IPMASQ="--ip-masq=false"
DOCKER_OPT_MTU="--mtu=1450"
DOCKER_NETWORK_OPTIONS=" --bip=10.5.58.1/24 --ip-masq=false --mtu=1450"
`
)

func TestWriteMatchesSpec(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "flannel")
	subnetPath := filepath.Join(dir, "subnet.env")
	dockerPath := filepath.Join(dir, "docker")
	if err := Write(subnetPath, specInfo); err != nil {
		t.Fatal(err)
	}
	if err := WriteDockerOpts(dockerPath, specInfo); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{subnetPath: specSubnetFile, dockerPath: specDockerOpts} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s:\n%s\nwant:\n%s", filepath.Base(path), got, want)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", path, st.Mode().Perm())
		}
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v, want 0755", st.Mode().Perm())
	}
	// No temporary file is left beside them.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want 2", len(entries))
	}
}

func TestDockerOptsWithoutMasquerade(t *testing.T) {
	info := specInfo
	info.IPMasq = false
	if got := string(info.DockerOpts()); !strings.Contains(got, `DOCKER_OPT_IPMASQ="--ip-masq=true"`) {
		t.Errorf("agent not masquerading, Docker must: %s", got)
	}
	if got := string(info.Marshal()); !strings.Contains(got, "FLANNEL_IPMASQ=false\n") {
		t.Errorf("subnet file: %s", got)
	}
}

func TestDualStack(t *testing.T) {
	info := specInfo
	info.IPv6Network = netip.MustParsePrefix("fc00:5::/48")
	info.IPv6Subnet = netip.MustParsePrefix("fc00:5:0:3a::/64")
	got := string(info.Marshal())
	for _, line := range []string{"FLANNEL_IPV6_NETWORK=fc00:5::/48\n", "FLANNEL_IPV6_SUBNET=fc00:5:0:3a::1/64\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("subnet file lacks %q:\n%s", line, got)
		}
	}
	if d := string(info.DockerOpts()); !strings.Contains(d, "--ipv6 --fixed-cidr-v6=fc00:5:0:3a::/64") {
		t.Errorf("docker options lack the IPv6 options: %s", d)
	}
	back, err := Parse(info.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if back != info {
		t.Errorf("round trip: %+v, want %+v", back, info)
	}
}

func TestParse(t *testing.T) {
	got, err := Parse([]byte(specSubnetFile))
	if err != nil {
		t.Fatal(err)
	}
	if got != specInfo {
		t.Fatalf("Parse = %+v, want %+v", got, specInfo)
	}
	quoted, err := Parse([]byte("# written by hand\n\nFLANNEL_SUBNET=\"10.5.58.1/24\"\nFLANNEL_MTU='1450'\nFLANNEL_OTHER=x\n"))
	if err != nil || quoted.Subnet != specInfo.Subnet || quoted.MTU != 1450 {
		t.Fatalf("quoted values: %+v, %v", quoted, err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no equals", "FLANNEL_SUBNET\n", "line 1"},
		{"bad subnet", "FLANNEL_SUBNET=10.5.58.1\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET"},
		{"v6 as subnet", "FLANNEL_SUBNET=fc00::1/64\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET"},
		{"network not aligned", "FLANNEL_NETWORK=10.5.1.0/16\nFLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=1450\n", "FLANNEL_NETWORK"},
		{"subnet outside network", "FLANNEL_NETWORK=10.6.0.0/16\nFLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=1450\n", "outside"},
		{"no subnet", "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET"},
		{"no mtu", "FLANNEL_SUBNET=10.5.58.1/24\n", "FLANNEL_MTU"},
		{"mtu too small", "FLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=20\n", "FLANNEL_MTU"},
		{"bad ipmasq", "FLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes please\n", "FLANNEL_IPMASQ"},
		{"twice", "FLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_SUBNET=10.5.59.1/24\nFLANNEL_MTU=1450\n", "twice"},
		{"too large", strings.Repeat("#", MaxSize+1), "larger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
		})
	}
}

func TestReadNamesThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	os.WriteFile(path, []byte("garbage\n"), 0o644)
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Read = %v, want an error naming %s", err, path)
	}
}
