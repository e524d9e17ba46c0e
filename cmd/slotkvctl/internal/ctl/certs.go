package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/tlsconfig"
)

const certsUsage = `Usage:
  slotkvctl dev-certs [--out DIR] [--hosts h1,h2,...] [--key-perm 0600]

dev-certs writes a new development CA and certificates signed by it into
DIR (default .data/certs; make certs runs it): ca.crt and ca.key, node.crt
and node.key for every service (--tls-cert/--tls-key; also a client
certificate, which services present to the storage nodes under mTLS), and
client.crt and client.key for slotkvctl, curl and tests. The node
certificate names --hosts (default: 127.0.0.1, ::1, localhost and the
docker-compose service names). For development only: the CA key lies next
to the certificates. --key-perm 0644 makes the node and client keys (and
the directory) readable by other users,
for containers that run as another user and mount them (the compose TLS
override, deployments/compose/tls.yml).
`

// mainCerts runs "dev-certs".
func mainCerts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("slotkvctl dev-certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, certsUsage) }
	out := fs.String("out", ".data/certs", "directory to write the certificates into")
	hosts := fs.String("hosts", strings.Join(tlsconfig.DevHosts, ","), "names and IPs of the node certificate, comma-separated")
	keyPerm := fs.String("key-perm", "0600", "permissions of the key files, octal")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "slotkvctl dev-certs: unexpected arguments %q\n", fs.Args())
		return 2
	}
	perm, err := strconv.ParseUint(*keyPerm, 8, 32)
	if err != nil || perm > 0o777 {
		fmt.Fprintf(stderr, "slotkvctl dev-certs: --key-perm %q is not an octal permission like 0600\n", *keyPerm)
		return 2
	}
	f, err := tlsconfig.DevCerts(*out, flagenv.SplitList(*hosts))
	if err != nil {
		fmt.Fprintf(stderr, "slotkvctl dev-certs: %v\n", err)
		return 1
	}
	// The node and client keys only: nothing but dev-certs needs the CA
	// key. A container's user must also be able to enter the directory.
	chmods := map[string]os.FileMode{f.NodeKey: os.FileMode(perm), f.ClientKey: os.FileMode(perm)}
	if perm&0o004 != 0 {
		chmods[*out] = 0o755
	}
	for path, mode := range chmods {
		if err := os.Chmod(path, mode); err != nil {
			fmt.Fprintf(stderr, "slotkvctl dev-certs: %v\n", err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "CA          %s (key %s)\nnode        %s (key %s)\nclient      %s (key %s)\n",
		f.CA, f.CAKey, f.Node, f.NodeKey, f.Client, f.ClientKey)
	return 0
}
