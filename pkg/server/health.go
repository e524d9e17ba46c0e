package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// errShuttingDown is what /readyz reports once shutdown has begun, so load
// balancers stop sending new requests while in-flight ones drain.
var errShuttingDown = errors.New("shutting down")

// readiness runs the Ready check and mirrors it into the gRPC health
// service: the overall status ("") and one entry per registered service.
type readiness struct {
	check    func(context.Context) error
	interval time.Duration
	log      *slog.Logger
	health   *health.Server
	services []string

	draining atomic.Bool
	stop     chan struct{} // closed by shutdown; ends the poller and Watch streams
	stopOnce sync.Once
	done     sync.WaitGroup
}

func newReadiness(check func(context.Context) error, interval time.Duration, log *slog.Logger) *readiness {
	if interval <= 0 {
		interval = DefaultReadyInterval
	}
	r := &readiness{
		check:    check,
		interval: interval,
		log:      log,
		health:   health.NewServer(),
		stop:     make(chan struct{}),
	}
	// NOT_SERVING until the first check passes: a load balancer must not
	// route to a node that is still opening its database.
	r.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return r
}

// register installs the health service on gs.
func (r *readiness) register(gs *grpc.Server) {
	healthpb.RegisterHealthServer(gs, watchStopper{Server: r.health, stop: r.stop})
}

// watchServices records the services registered on gs so each gets a
// health entry, for clients that check a specific service name.
func (r *readiness) watchServices(gs *grpc.Server) {
	for name := range gs.GetServiceInfo() {
		r.services = append(r.services, name)
		r.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

// Check runs the readiness check once, bounded by ReadyCheckTimeout.
func (r *readiness) Check(ctx context.Context) error {
	if r.draining.Load() {
		return errShuttingDown
	}
	if r.check == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ReadyCheckTimeout)
	defer cancel()
	return r.check(ctx)
}

// start polls the check and updates the health service until shutdown.
func (r *readiness) start() {
	r.done.Go(func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-r.stop
			cancel()
		}()
		t := time.NewTicker(r.interval)
		defer t.Stop()
		var last error
		first := true
		for {
			err := r.Check(ctx)
			if r.draining.Load() {
				return
			}
			if first || (err == nil) != (last == nil) {
				if err == nil {
					r.log.Info("ready")
				} else {
					r.log.Warn("not ready", "err", err)
				}
			}
			first, last = false, err
			r.set(err == nil)
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	})
}

func (r *readiness) set(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	r.health.SetServingStatus("", st)
	for _, name := range r.services {
		r.health.SetServingStatus(name, st)
	}
}

// shutdown marks everything NOT_SERVING for good and stops the poller.
func (r *readiness) shutdown() {
	r.stopOnce.Do(func() {
		r.draining.Store(true)
		r.health.Shutdown() // NOT_SERVING, and ignores later updates
		close(r.stop)
	})
}

func (r *readiness) wait() { r.done.Wait() }

// watchStopper ends health Watch streams at shutdown. A Watch stream never
// finishes by itself, so without this every client using gRPC client-side
// health checking would hold GracefulStop until ShutdownTimeout.
type watchStopper struct {
	*health.Server
	stop <-chan struct{}
}

func (w watchStopper) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return w.Server.Watch(req, ctxStream{Health_WatchServer: stream, ctx: ctx})
}

type ctxStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }
