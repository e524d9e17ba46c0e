package router_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/services/router"
)

// TestRESPRefusals: the Redis protocol needs topology mode (a naming
// file's layouts have no single owner to send an atomic update to), and an
// open router may not serve it beyond loopback.
func TestRESPRefusals(t *testing.T) {
	t.Parallel()
	naming := filepath.Join(t.TempDir(), "layouts.txt")
	if err := os.WriteFile(naming, []byte("127.0.0.1:1 0/1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		set  func(*router.Options)
		want string
	}{
		{"naming file", func(o *router.Options) { o.NamingFile = naming; o.RESPAddr = "127.0.0.1:0" },
			"the Redis protocol (--resp-addr) needs topology mode (--etcd-endpoints), not a naming file"},
		{"open beyond loopback", func(o *router.Options) { o.Etcd.Endpoints = []string{"127.0.0.1:1"}; o.RESPAddr = "0.0.0.0:0" },
			`--resp-addr "0.0.0.0:0" is not a loopback address and no token is set`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := router.DefaultOptions()
			o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
			tt.set(&o)
			err := router.Run(t.Context(), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
