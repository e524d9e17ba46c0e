package resp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/slot"
)

// Value is one key's value as a Backend reads it.
type Value struct {
	Data  []byte
	Found bool
	// ExpiresAtMs is the key's expiry in Unix milliseconds, 0 for none.
	ExpiresAtMs int64
}

// Pair is one key and value of MSET.
type Pair struct{ Key, Value []byte }

// Backend is where the commands read and write. Errors are gRPC status
// errors from the storage nodes (mapped to Redis errors here: see
// replyError) or an Error, answered as it is.
type Backend interface {
	// Get reads one key.
	Get(ctx context.Context, key []byte) (Value, error)
	// Set writes one key unconditionally, with an expiry (0 = none).
	Set(ctx context.Context, key, value []byte, expiresAtMs int64) error
	// Update applies one atomic read-modify-write on the key's owner (the
	// storage node's Update RPC).
	Update(ctx context.Context, req *storagev1.UpdateRequest) (*storagev1.UpdateResponse, error)
	// MGet reads keys (possibly in several slots), answers aligned.
	MGet(ctx context.Context, keys [][]byte) ([]Value, error)
	// MSet writes pairs. With ifAllAbsent (MSETNX; all keys in one slot)
	// nothing is written when any key exists, and applied is false.
	MSet(ctx context.Context, pairs []Pair, ifAllAbsent bool) (applied bool, err error)
	// Del deletes keys and counts those that existed.
	Del(ctx context.Context, keys [][]byte) (int64, error)
	// Scan returns up to count keys starting at cursor (nil: the
	// beginning) with the prefix, and the cursor to go on from (nil when
	// the scan is complete). Cursors are opaque to the server.
	Scan(ctx context.Context, cursor, prefix []byte, count int) (keys [][]byte, next []byte, err error)
	// DBSize counts the keys.
	DBSize(ctx context.Context) (int64, error)
	// FlushAll deletes every key.
	FlushAll(ctx context.Context) error
}

// Cluster is the view of the topology a cluster-mode server answers by.
type Cluster interface {
	// Route is nil when this node serves slot s now; otherwise the error
	// to answer: a MovedError to the owner, or TRYAGAIN / CLUSTERDOWN as
	// an Error.
	Route(s uint16) error
	// State describes the cluster (CLUSTER SLOTS, SHARDS, NODES, INFO).
	State() ClusterState
}

// ClusterState is the topology as Redis Cluster tools see it.
type ClusterState struct {
	// Version is the topology version (Redis's config epoch).
	Version uint64
	// Self is this node's id.
	Self string
	// Nodes, sorted by id.
	Nodes []ClusterNode
}

// ClusterNode is one node of a ClusterState.
type ClusterNode struct {
	ID string
	// Addr is the node's RESP host:port, "" when it serves no RESP.
	Addr   string
	Ranges []slot.Range
}

// Error is a reply error written as it is, e.g. "TRYAGAIN ..." or
// "CLUSTERDOWN ...": the first word is Redis's error code.
type Error string

func (e Error) Error() string { return string(e) }

// MovedError sends the client to the slot's owner: -MOVED <slot> <addr>.
type MovedError struct {
	Slot uint16
	Addr string
}

func (e *MovedError) Error() string { return fmt.Sprintf("MOVED %d %s", e.Slot, e.Addr) }

// Options configures a Server.
type Options struct {
	// Name is the service name INFO reports (e.g. "slotkv-router").
	Name string
	// Backend serves the data. Required.
	Backend Backend
	// Cluster, when set, makes the server a cluster-mode node; nil is
	// proxy mode (one server owning every slot).
	Cluster Cluster
	// Tokens: with any set, connections must AUTH first; FLUSHALL needs
	// the admin token.
	Tokens auth.Tokens
	// Limits bound keys and values before anything reaches the Backend.
	Limits limits.KV
	// CommandTimeout bounds one command's backend calls (10s when 0).
	CommandTimeout time.Duration
	// MaxScanCursors bounds the SCAN cursors remembered (65536 when 0).
	MaxScanCursors int
	// MaxRequestBytes bounds what a connection may send without
	// completing a command (DefaultMaxRequestBytes when 0; at least the
	// largest key and value); before AUTH, with tokens set, 64 KiB. Past
	// it the connection gets a protocol error and is closed.
	MaxRequestBytes int64

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Server is a RESP server. Serve it on a listener.
type Server struct {
	o        Options
	log      *slog.Logger
	tracer   trace.Tracer
	commands metric.Int64Counter
	duration metric.Float64Histogram
	conns    metric.Int64UpDownCounter
	started  time.Time

	nextID    atomic.Int64
	connected atomic.Int64
	total     atomic.Int64
	processed atomic.Int64

	cursors *cursorTable

	mu  sync.Mutex
	srv *redcon.Server
}

// New checks o and returns a Server.
func New(o Options) (*Server, error) {
	if o.Backend == nil {
		return nil, errors.New("resp: a backend is required")
	}
	if o.Name == "" {
		o.Name = "slotkv"
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 10 * time.Second
	}
	if o.MaxScanCursors <= 0 {
		o.MaxScanCursors = 1 << 16
	}
	o.Limits = o.Limits.WithDefaults()
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	o.MaxRequestBytes = max(o.MaxRequestBytes, int64(o.Limits.MaxKeyBytes+o.Limits.MaxValueBytes)+unauthenticatedRequestBytes)
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	tp := o.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	mp := o.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/slotkv/slotkv/pkg/resp")
	s := &Server{o: o, log: log.With("component", "resp"), tracer: tp.Tracer("github.com/slotkv/slotkv/pkg/resp"),
		started: time.Now(), cursors: newCursorTable(o.MaxScanCursors)}
	var err error
	if s.commands, err = m.Int64Counter("slotkv.resp.commands",
		metric.WithDescription("RESP commands served, by command and outcome (ok, or the Redis error code)")); err != nil {
		return nil, err
	}
	if s.duration, err = m.Float64Histogram("slotkv.resp.command.duration", metric.WithUnit("s"),
		metric.WithDescription("time to serve one RESP command")); err != nil {
		return nil, err
	}
	if s.conns, err = m.Int64UpDownCounter("slotkv.resp.connections",
		metric.WithDescription("open RESP connections")); err != nil {
		return nil, err
	}
	return s, nil
}

// Serve serves RESP on ln until ctx ends, then closes ln and every
// connection. It returns nil after ctx ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	before := s.o.MaxRequestBytes
	if !s.o.Tokens.Open() {
		before = unauthenticatedRequestBytes
	}
	ln = &guardListener{Listener: ln, authed: s.o.MaxRequestBytes, open: before}
	srv := redcon.NewServer(ln.Addr().String(),
		func(c redcon.Conn, cmd redcon.Command) { s.handle(ctx, c, cmd) },
		func(c redcon.Conn) bool {
			id := s.nextID.Add(1)
			open := s.o.Tokens.Open()
			c.SetContext(&session{id: id, authed: open, admin: open, created: time.Now()})
			s.connected.Add(1)
			s.total.Add(1)
			s.conns.Add(ctx, 1)
			return true
		},
		func(c redcon.Conn, err error) {
			s.connected.Add(-1)
			s.conns.Add(context.WithoutCancel(ctx), -1)
		})
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			_ = srv.Close()
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// session is one connection's state.
type session struct {
	id      int64
	authed  bool
	admin   bool // authenticated with the admin token (or tokens are open)
	resp3   bool
	name    string
	libName string
	libVer  string
	created time.Time
	quit    bool // QUIT: answer nothing after it
}

// handle runs the commands redcon hands it: arity, auth and key checks
// from the table, then the handler, each in a span, counted.
//
// redcon hands the commands of a pipeline one by one; the first takes the
// rest of the pipeline along (see pipeline.go), so runs of GETs and of
// plain SETs become one batch call each, answered in order.
func (s *Server) handle(base context.Context, c redcon.Conn, cmd redcon.Command) {
	sess, _ := c.Context().(*session)
	if sess == nil {
		sess = &session{}
	}
	if g, ok := c.NetConn().(*guardConn); ok {
		// Whatever the commands do, the guard's count restarts here.
		defer func() { g.commandRan(sess.authed) }()
	}
	cmds := []redcon.Command{cmd}
	if more := c.ReadPipeline(); len(more) > 0 {
		cmds = append(cmds, more...)
	}
	for i := 0; i < len(cmds) && !sess.quit; {
		if n := s.batch(base, c, sess, cmds[i:]); n > 0 {
			i += n
			continue
		}
		s.handleOne(base, c, sess, cmds[i])
		i++
	}
}

// handleOne runs one command in a span, counted.
func (s *Server) handleOne(base context.Context, c redcon.Conn, sess *session, cmd redcon.Command) {
	name := strings.ToLower(string(cmd.Args[0]))
	spec := lookup(name)
	w := &writer{c: c, resp3: sess.resp3, outcome: "ok"}
	start := time.Now()
	label := name
	if spec == nil {
		label = "unknown"
	}
	ctx, span := s.startSpan(base, label, 1)
	outcome := s.run(ctx, w, sess, spec, cmd.Args)
	s.finish(base, span, label, outcome, 1, start)
}

func (s *Server) startSpan(ctx context.Context, label string, n int) (context.Context, trace.Span) {
	op := strings.ToUpper(label)
	return s.tracer.Start(ctx, "RESP "+op, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("db.system", "slotkv"), attribute.String("db.operation.name", op),
			attribute.Int("db.operation.batch.size", n)))
}

// finish ends a span and counts n commands of one outcome.
func (s *Server) finish(ctx context.Context, span trace.Span, label, outcome string, n int, start time.Time) {
	if outcome != "ok" {
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
	s.processed.Add(int64(n))
	attrs := metric.WithAttributes(attribute.String("command", label), attribute.String("outcome", outcome))
	s.commands.Add(ctx, int64(n), attrs)
	s.duration.Record(ctx, time.Since(start).Seconds(), attrs)
}

// run checks and runs one command and returns its outcome for the
// metrics: "ok" or the error code written.
func (s *Server) run(ctx context.Context, w *writer, sess *session, spec *command, args [][]byte) string {
	if spec == nil {
		var b strings.Builder
		for i, a := range args[1:] {
			if i == 20 {
				break
			}
			fmt.Fprintf(&b, "'%s' ", clip(a))
		}
		return w.err(fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", clip(args[0]), b.String()))
	}
	if !arityOK(spec.arity, len(args)) {
		return w.err(fmt.Sprintf("ERR wrong number of arguments for '%s' command", spec.name))
	}
	if !sess.authed && !spec.has(flagNoAuth) {
		return w.err("NOAUTH Authentication required.")
	}
	if spec.has(flagAdmin) && !sess.admin {
		return w.err(fmt.Sprintf("NOPERM User default has no permissions to run the '%s' command (it needs the admin token)", spec.name))
	}
	keys := spec.keysOf(args)
	for _, k := range keys {
		if len(k) > s.o.Limits.MaxKeyBytes {
			return w.err(fmt.Sprintf("ERR key is %d bytes, above the limit of %d (--max-key-bytes)", len(k), s.o.Limits.MaxKeyBytes))
		}
	}
	if s.o.Cluster != nil && len(keys) > 0 {
		sl := slot.Of(keys[0])
		for _, k := range keys[1:] {
			if slot.Of(k) != sl {
				return w.err("CROSSSLOT Keys in request don't hash to the same slot")
			}
		}
		if err := s.o.Cluster.Route(sl); err != nil {
			return w.fail(err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.CommandTimeout)
	defer cancel()
	x := &call{s: s, w: w, sess: sess, args: args, ctx: ctx, spec: spec}
	if err := spec.run(x); err != nil {
		return w.fail(err)
	}
	return w.outcome
}

// clip shortens an argument echoed in an error the way Redis does (128
// bytes) and keeps it on one line.
func clip(b []byte) string {
	if len(b) > 128 {
		b = b[:128]
	}
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(string(b))
}

func arityOK(arity, n int) bool {
	if arity >= 0 {
		return n == arity
	}
	return n >= -arity
}

// call is one command being served.
type call struct {
	s    *Server
	w    *writer
	sess *session
	args [][]byte
	ctx  context.Context
	spec *command
}

func (x *call) backend() Backend { return x.s.o.Backend }

// checkValue refuses a value over the limit.
func (x *call) checkValue(v []byte) error {
	if len(v) > x.s.o.Limits.MaxValueBytes {
		return Error(fmt.Sprintf("ERR value is %d bytes, above the limit of %d (--max-value-bytes)", len(v), x.s.o.Limits.MaxValueBytes))
	}
	return nil
}

// Start binds addr (over TLS when tlsCfg is set: redis-cli --tls and the
// clients' TLS options connect to it) and serves on it in the background
// until ctx ends or stop is called; stop waits for the server to end. A
// failure of the server after the bind is logged.
func (s *Server) Start(ctx context.Context, addr string, tlsCfg *tls.Config) (bound net.Addr, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	bound = ln.Addr()
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(ctx, ln); err != nil {
			s.log.Error("RESP server stopped", "err", err)
		}
	}()
	return bound, func() { cancel(); <-done }, nil
}
