// Command slotkv-router serves slotkv's public key-value API (gRPC and REST)
// and routes each key to the storage node owning its slot.
//
// Every flag has an environment fallback (SLOTKV_*); see -h.
//
// `slotkv-router healthcheck [--url URL]` exits 0 when a running service's
// /readyz answers 2xx, for container health checks (the image has no
// curl); the port comes from $SLOTKV_HTTP_ADDR or the --http-addr default.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/version"
	"github.com/slotkv/slotkv/services/router"
)

const serviceName = "slotkv-router"

func main() {
	if code, ok := server.HealthcheckCommand(os.Args[1:], router.DefaultOptions().HTTPAddr); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	def := router.DefaultOptions()
	fs := flag.NewFlagSet(serviceName, flag.ContinueOnError)
	var common server.Flags
	common.Register(fs, def.Common)
	namingFile := flagenv.String(fs, "naming-file", "SLOTKV_NAMING_FILE", "", "path: route by a naming file instead of the topology (then --etcd-endpoints is not needed): one line \"address N/M [weight]\" per instance, N/M = partition N of M = slots [N*16384/M, (N+1)*16384/M); several layouts at once; reloaded when it changes")
	namingPoll := flagenv.Duration(fs, "naming-poll", "SLOTKV_NAMING_POLL", 250*time.Millisecond, "how often the naming file is checked for changes")
	balancer := flagenv.String(fs, "balancer", "SLOTKV_BALANCER", def.Balancer, "naming-file mode: how reads pick an instance of a partition: rr, random, hash (consistent hash of the first key) or latency")
	hedgeDelay := flagenv.Duration(fs, "hedge-delay", "SLOTKV_HEDGE_DELAY", 0, "naming-file mode: send a backup (hedged) read to another instance of the partition when the first has not answered within this delay; 0 = off. In topology mode each slot has one owner, so there is nothing to hedge to and this is ignored")
	hedgeMaxRatio := flagenv.Float64(fs, "hedge-max-ratio", "SLOTKV_HEDGE_MAX_RATIO", def.HedgeMaxRatio, "naming-file mode: cap on hedged reads as a fraction of reads (ignored in topology mode)")
	callTimeout := flagenv.Duration(fs, "call-timeout", "SLOTKV_CALL_TIMEOUT", def.CallTimeout, "deadline of a call whose caller set none (retries included)")
	maxKey := flagenv.Int(fs, "max-key-bytes", "SLOTKV_MAX_KEY_BYTES", limits.DefaultMaxKeyBytes, "largest key forwarded, in bytes; set it to the storage nodes' --max-key-bytes when that is changed")
	maxValue := flagenv.Int(fs, "max-value-bytes", "SLOTKV_MAX_VALUE_BYTES", limits.DefaultMaxValueBytes, "largest value forwarded, in bytes (also sizes the REST body and gRPC message caps); set it to the storage nodes' --max-value-bytes when that is changed")
	respAddr := flagenv.String(fs, "resp-addr", "SLOTKV_RESP_ADDR", "", "serve the Redis protocol (proxy mode: one server owning every slot) on this address; empty = off; topology mode only")
	maxRetries := flagenv.Int(fs, "max-retries", "SLOTKV_MAX_RETRIES", def.MaxRetries, "with allow_partial, backoff rounds for an unavailable node before it is reported failed (SLOT_MOVED, frozen slots and unavailable nodes of other calls are retried until the call's deadline); in naming-file mode, retries of a read on other instances")
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if ee := (*flagenv.EnvError)(nil); errors.As(err, &ee) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", serviceName, err)
		}
		return 2
	}
	if common.ShowVersion {
		fmt.Println(serviceName, version.Version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", serviceName, fs.Args())
		return 2
	}
	if err := common.Finish(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", serviceName, err)
		return 2
	}

	ctx, stop := server.SignalContext()
	defer stop()
	return server.Main(ctx, common.MainConfig(serviceName, nil), func(env server.Env) error {
		o := def
		o.Common = common.Common
		o.NamingFile, o.NamingPoll = *namingFile, *namingPoll
		o.Balancer, o.HedgeDelay, o.HedgeMaxRatio = *balancer, *hedgeDelay, *hedgeMaxRatio
		o.CallTimeout, o.MaxRetries = *callTimeout, *maxRetries
		o.MaxKeyBytes, o.MaxValueBytes = *maxKey, *maxValue
		o.RESPAddr, o.OnListenRESP = *respAddr, env.OnListenRESP
		o.Logger, o.TracerProvider, o.OnListen = env.Logger, env.TracerProvider, env.OnListen
		o.MeterProvider, o.MetricsHandler = env.MeterProvider, env.MetricsHandler
		env.Logger.Info("routing", "etcd", strings.Join(common.Etcd.Endpoints, ","), "naming_file", *namingFile)
		return router.Run(env.Ctx, o)
	})
}
