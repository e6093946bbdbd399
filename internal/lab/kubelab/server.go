package kubelab

import (
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
)

// APIServerPort is the port the API server serves on.
const APIServerPort = 6443

// EtcdArgs is the command line of the API server's etcd (bin), named
// name, with its data in dataDir, serving clients on
// http://127.0.0.1:clientPort (ClientURL) and peers on 127.0.0.1:peerPort.
func EtcdArgs(bin, name, dataDir string, clientPort, peerPort int) []string {
	client := ClientURL(clientPort)
	peer := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))
	return []string{bin,
		"--name", name,
		"--data-dir", dataDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", name + "=" + peer,
		"--unsafe-no-fsync", "--log-level", "warn",
	}
}

// ClientURL is the URL of an etcd serving clients on port of the loopback.
func ClientURL(port int) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// APIServerArgs is the API server's command line (without the binary):
// on etcdURL, serving on bind:APIServerPort (an unspecified address serves
// every address of the namespace) and advertising advertise, with the
// credentials c, its generated files in dir.
func APIServerArgs(c *Credentials, etcdURL string, bind, advertise netip.Addr, dir string) []string {
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + bind.String(),
		"--advertise-address=" + advertise.String(),
		"--secure-port=" + strconv.Itoa(APIServerPort),
		// The default reconciler writes the advertise address into the
		// kubernetes Endpoints and refuses a loopback one.
		"--endpoint-reconciler-type=none",
		// On SIGTERM, close open watches after a second and exit: without
		// a period the server waits for them (its clients' informers) for
		// a minute, and a restart becomes a kill.
		"--shutdown-watch-termination-grace-period=1s",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + c.CertFile,
		"--tls-private-key-file=" + c.KeyFile,
		"--token-auth-file=" + c.TokenFile,
		"--service-account-key-file=" + c.SAPubFile,
		"--service-account-signing-key-file=" + c.SAKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC",
		// The DaemonSet runs privileged: validation refuses it otherwise.
		"--allow-privileged=true",
		"--profiling=false",
	}
}
