package server

import (
	"flag"

	"github.com/slotkv/slotkv/pkg/flagenv"
)

// ClientFlags are the flags of a client of slotkv's admin APIs (slotkvctl):
// the token to send and, with TLS, how to trust the servers. Register
// defines them, flagenv.Parse fills them, Finish completes them.
type ClientFlags struct {
	// Token is the token sent with every call (after Finish): --admin-token
	// or --admin-token-file, else --token.
	Token string

	token, adminToken, adminTokenFile string
}

// Register defines --token, --admin-token and --admin-token-file on fs,
// with their SLOTKV_* environment fallbacks.
func (c *ClientFlags) Register(fs *flag.FlagSet) {
	flagenv.StringVar(fs, &c.token, "token", "SLOTKV_TOKEN", "", "token sent with every call (the cluster's --token); --admin-token overrides it")
	flagenv.StringVar(fs, &c.adminToken, "admin-token", "SLOTKV_ADMIN_TOKEN", "", "admin token sent with every call")
	flagenv.StringVar(fs, &c.adminTokenFile, "admin-token-file", "SLOTKV_ADMIN_TOKEN_FILE", "", "read --admin-token from this file")
}

// Finish reads the token file; errors name the flag and the file.
func (c *ClientFlags) Finish() error {
	tok, err := tokenFlag("admin-token", c.adminToken, c.adminTokenFile, c.token)
	if err != nil {
		return err
	}
	c.Token = tok
	return nil
}
