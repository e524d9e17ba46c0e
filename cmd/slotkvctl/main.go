// Command slotkvctl administers a slotkv cluster: bootstrap its first
// topology, show the topology, describe nodes. Run `slotkvctl help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/slotkv/slotkv/cmd/slotkvctl/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}
