package router

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/resp"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/services/router/internal/kv"
)

// serveRESP binds o.RESPAddr and serves proxy-mode RESP over svc's
// routing (over TLS when the router serves TLS) until ctx ends or stop is
// called (stop waits for the server).
func serveRESP(ctx context.Context, o Options, svc *kv.Service, lim limits.KV, log *slog.Logger) (stop func(), err error) {
	if err := server.CheckListenExposure("--resp-addr", o.RESPAddr, !o.Tokens.Open(), o.Insecure); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	b, err := svc.RESPBackend()
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	rs, err := resp.New(resp.Options{
		Name: ServiceName, Backend: b, Tokens: o.Tokens, Limits: lim, CommandTimeout: o.CallTimeout,
		Logger: log, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider,
	})
	if err != nil {
		return nil, err
	}
	bound, stop, err := rs.Start(ctx, o.RESPAddr, o.TLS)
	if err != nil {
		return nil, fmt.Errorf("router: RESP listener (--resp-addr): %w", err)
	}
	if o.OnListenRESP != nil {
		o.OnListenRESP(bound)
	}
	log.Info("serving RESP (proxy mode)", "resp_addr", bound.String(), "tls", o.TLS != nil)
	return stop, nil
}
