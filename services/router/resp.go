package router

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/resp"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/services/router/internal/kv"
)

// serveRESP binds o.RESPAddr and serves proxy-mode RESP over svc's
// routing until ctx ends or stop is called (stop waits for the server).
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
	ln, err := net.Listen("tcp", o.RESPAddr)
	if err != nil {
		return nil, fmt.Errorf("router: RESP listener (--resp-addr): %w", err)
	}
	if o.OnListenRESP != nil {
		o.OnListenRESP(ln.Addr())
	}
	log.Info("serving RESP (proxy mode)", "resp_addr", ln.Addr().String())
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rs.Serve(rctx, ln); err != nil {
			log.Error("RESP server stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
