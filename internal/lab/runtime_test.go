package lab

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestDockerNetworkOptions(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string
		wantErr    bool
	}{
		{
			name: "as the agent writes it",
			file: "DOCKER_OPT_BIP=\"--bip=10.5.58.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\n" +
				"DOCKER_NETWORK_OPTIONS=\" --bip=10.5.58.1/24 --ip-masq=false --mtu=1450\"\n",
			want: []string{"--bip=10.5.58.1/24", "--ip-masq=false", "--mtu=1450"},
		},
		{
			name: "unquoted",
			file: "DOCKER_NETWORK_OPTIONS=--bip=10.5.58.1/24 --mtu=1450\n",
			want: []string{"--bip=10.5.58.1/24", "--mtu=1450"},
		},
		{name: "missing", file: "DOCKER_OPT_BIP=\"--bip=10.5.58.1/24\"\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "docker")
			if err := os.WriteFile(path, []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := DockerNetworkOptions(path)
			if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Errorf("DockerNetworkOptions = %q, %v; want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := DockerNetworkOptions(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}

func TestParseInspect(t *testing.T) {
	pid, addr, gw, err := parseInspect("4242 10.5.58.2/24 10.5.58.1\n")
	if err != nil || pid != 4242 || addr != netip.MustParsePrefix("10.5.58.2/24") || gw != netip.MustParseAddr("10.5.58.1") {
		t.Errorf("parseInspect = %d %s %s %v", pid, addr, gw, err)
	}
	for _, bad := range []string{
		"0 10.5.58.2/24 10.5.58.1", // a stopped container
		"4242 /0 ",                 // no network
		"4242 10.5.58.2 10.5.58.1",
		"4242 10.5.58.2/24 gateway",
		"",
	} {
		if _, _, _, err := parseInspect(bad); err == nil {
			t.Errorf("parseInspect(%q) = nil error", bad)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/run/netns/x`:        "/run/netns/x",
		`/tmp/a\040b`:         "/tmp/a b",
		`/tmp/tab\011and\134`: "/tmp/tab\tand\\",
		`/tmp/short\04`:       `/tmp/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBusyboxRootfs: the image holds the static busybox and links to it,
// or the error names the package to install.
func TestBusyboxRootfs(t *testing.T) {
	var buf bytes.Buffer
	err := BusyboxRootfs(&buf)
	if errors.Is(err, ErrNoBusybox) {
		if _, statErr := os.Stat(BusyboxPath); statErr == nil {
			t.Fatalf("%s exists but: %v", BusyboxPath, err)
		}
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	links := map[string]string{}
	var size int64
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if h.Name != "bin/busybox" || h.Mode&0o111 == 0 {
				t.Errorf("file %s mode %o, want only bin/busybox, executable", h.Name, h.Mode)
			}
			size = h.Size
		case tar.TypeSymlink:
			links[h.Name] = h.Linkname
		}
	}
	if size != int64(len(bin)) {
		t.Errorf("bin/busybox has %d bytes, want %d", size, len(bin))
	}
	for _, a := range []string{"sh", "sleep", "ping", "cat"} {
		if links["bin/"+a] != "busybox" {
			t.Errorf("bin/%s -> %q, want busybox", a, links["bin/"+a])
		}
	}
	if err := checkStatic("/bin/ls"); !errors.Is(err, ErrNoBusybox) {
		t.Errorf("checkStatic(/bin/ls) = %v, want ErrNoBusybox (it is dynamically linked)", err)
	}
}

func TestMountPoints(t *testing.T) {
	mountinfo := []byte(`22 1 0:21 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
618 22 0:4 net:[4026532] /run/netns/na1234-h1 rw shared:5 - nsfs nsfs rw
619 22 0:4 net:[4026533] /run/netns/netns-2f1c rw shared:5 - nsfs nsfs rw
700 30 254:1 /tmp/lab/a\040b /tmp/lab/a\040b rw - ext4 /dev/vda rw
701 30 254:1 /tmp/laboratory /tmp/laboratory rw - ext4 /dev/vda rw
short line
`)
	if got, want := mountPoints(mountinfo, "/run/netns"), []string{"/run/netns/na1234-h1", "/run/netns/netns-2f1c"}; !slices.Equal(got, want) {
		t.Errorf("mountPoints(/run/netns) = %q, want %q", got, want)
	}
	if got, want := mountPoints(mountinfo, "/tmp/lab"), []string{"/tmp/lab/a b"}; !slices.Equal(got, want) {
		t.Errorf("mountPoints(/tmp/lab) = %q, want %q (not /tmp/laboratory)", got, want)
	}
}
