// Command slotkv-dataset builds, verifies and generates slotkv bulk-load
// datasets. Run `slotkv-dataset help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/slotkv/slotkv/cmd/slotkv-dataset/internal/tool"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := tool.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
