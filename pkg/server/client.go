package server

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/tlsconfig"
)

// ClientFlags are the flags of a client of slotkv's admin APIs (slotkvctl):
// the token to send and, with TLS, how to trust the servers. Register
// defines them, flagenv.Parse fills them, Finish completes them.
type ClientFlags struct {
	// Token is the token sent with every call (after Finish): --admin-token
	// or --admin-token-file, else --token.
	Token string
	// TLS is the configuration to dial with (after Finish); nil is
	// plaintext.
	TLS *tls.Config

	token, adminToken, adminTokenFile string
	useTLS                            bool
	ca, cert, key                     string
}

// Register defines --token, --admin-token and --admin-token-file on fs,
// with their SLOTKV_* environment fallbacks.
func (c *ClientFlags) Register(fs *flag.FlagSet) {
	flagenv.StringVar(fs, &c.token, "token", "SLOTKV_TOKEN", "", "token sent with every call (the cluster's --token); --admin-token overrides it")
	flagenv.StringVar(fs, &c.adminToken, "admin-token", "SLOTKV_ADMIN_TOKEN", "", "admin token sent with every call")
	flagenv.StringVar(fs, &c.adminTokenFile, "admin-token-file", "SLOTKV_ADMIN_TOKEN_FILE", "", "read --admin-token from this file")
	flagenv.BoolVar(fs, &c.useTLS, "tls", "SLOTKV_TLS", false, "dial over TLS, verifying servers against the system's roots (implied by --tls-ca)")
	flagenv.StringVar(fs, &c.ca, "tls-ca", "SLOTKV_TLS_CA", "", "PEM CA certificates to verify the servers (implies --tls)")
	flagenv.StringVar(fs, &c.cert, "tls-client-cert", "SLOTKV_TLS_CLIENT_CERT", "", "PEM client certificate, for servers that require one (mTLS; implies --tls)")
	flagenv.StringVar(fs, &c.key, "tls-client-key", "SLOTKV_TLS_CLIENT_KEY", "", "PEM private key of --tls-client-cert")
}

// Finish reads the token file; errors name the flag and the file.
func (c *ClientFlags) Finish() error {
	tok, err := tokenFlag("admin-token", c.adminToken, c.adminTokenFile, c.token)
	if err != nil {
		return err
	}
	c.Token = tok
	if (c.cert == "") != (c.key == "") {
		return errors.New("--tls-client-cert and --tls-client-key go together: give both or neither")
	}
	if c.useTLS || c.ca != "" || c.cert != "" {
		if c.TLS, err = tlsconfig.Client(c.ca, c.cert, c.key); err != nil {
			return fmt.Errorf("--tls-ca/--tls-client-cert: %w", err)
		}
	}
	return nil
}
