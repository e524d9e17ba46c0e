package server

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/tlsconfig"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// Environment variables of the etcd flags, for the tools and tests that set
// them.
const (
	EnvEtcdEndpoints = "SLOTKV_ETCD_ENDPOINTS"
	EnvEtcdPrefix    = "SLOTKV_ETCD_PREFIX"
)

// DefaultEtcdDialTimeout bounds the first connection to etcd.
const DefaultEtcdDialTimeout = 5 * time.Second

// Etcd is where a service finds the control plane: the etcd cluster that
// holds the topology, the node registrations and the job records (see
// pkg/topostore). Empty Endpoints means no etcd.
type Etcd struct {
	// Endpoints are the etcd client URLs or host:port pairs.
	Endpoints []string
	// Prefix is the key prefix of this cluster's records
	// (topostore.DefaultPrefix when empty).
	Prefix string
	// DialTimeout bounds the first connection (DefaultEtcdDialTimeout when
	// zero).
	DialTimeout time.Duration
	// TLS, when set, is used to dial etcd.
	TLS *tls.Config

	endpoints         string
	ca, cert, key     string
	registeredOnFlags bool
}

// Enabled reports whether an etcd is configured.
func (e *Etcd) Enabled() bool { return len(e.Endpoints) > 0 }

// RegisterFlags defines --etcd-endpoints, --etcd-prefix,
// --etcd-dial-timeout and the etcd TLS flags on fs, each with its SLOTKV_*
// environment fallback.
func (e *Etcd) RegisterFlags(fs *flag.FlagSet) {
	e.registeredOnFlags = true
	if e.DialTimeout == 0 {
		e.DialTimeout = DefaultEtcdDialTimeout
	}
	flagenv.StringVar(fs, &e.endpoints, "etcd-endpoints", EnvEtcdEndpoints, strings.Join(e.Endpoints, ","), "comma-separated etcd client endpoints of the control plane (topology, node registrations, job records)")
	flagenv.StringVar(fs, &e.Prefix, "etcd-prefix", EnvEtcdPrefix, e.Prefix, "key prefix of this cluster's records in etcd (default "+topostore.DefaultPrefix+")")
	flagenv.DurationVar(fs, &e.DialTimeout, "etcd-dial-timeout", "SLOTKV_ETCD_DIAL_TIMEOUT", e.DialTimeout, "bound on the first connection to etcd")
	flagenv.StringVar(fs, &e.ca, "etcd-ca", "SLOTKV_ETCD_CA", "", "PEM CA certificates to verify etcd with (dials etcd over TLS)")
	flagenv.StringVar(fs, &e.cert, "etcd-cert", "SLOTKV_ETCD_CERT", "", "PEM client certificate presented to etcd (with --etcd-key)")
	flagenv.StringVar(fs, &e.key, "etcd-key", "SLOTKV_ETCD_KEY", "", "PEM private key of --etcd-cert")
}

// Finish turns the parsed flags into Endpoints and TLS; errors name the
// flag.
func (e *Etcd) Finish() error {
	if !e.registeredOnFlags {
		return nil
	}
	e.Endpoints = nil
	for _, ep := range strings.Split(e.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			e.Endpoints = append(e.Endpoints, ep)
		}
	}
	if (e.cert == "") != (e.key == "") {
		return errors.New("--etcd-cert and --etcd-key go together: give both or neither")
	}
	if (e.ca != "" || e.cert != "") && !e.Enabled() {
		return errors.New("--etcd-ca/--etcd-cert need --etcd-endpoints")
	}
	if e.ca != "" || e.cert != "" {
		c, err := tlsconfig.Client(e.ca, e.cert, e.key)
		if err != nil {
			return fmt.Errorf("--etcd-ca/--etcd-cert: %w", err)
		}
		e.TLS = c
	}
	if e.DialTimeout <= 0 {
		return fmt.Errorf("--etcd-dial-timeout %v must be positive", e.DialTimeout)
	}
	return nil
}

// ErrNoEtcd is Connect's error when no endpoint is configured.
var ErrNoEtcd = errors.New("no etcd configured (--etcd-endpoints)")

// Dial returns a client of the configured etcd (the caller closes it) and
// the topology store on it. It does not wait for etcd: a storage node
// starts and serves from the topology it holds while etcd is unreachable.
func (e *Etcd) Dial(ctx context.Context, log *slog.Logger) (*clientv3.Client, *topostore.Store, error) {
	if !e.Enabled() {
		return nil, nil, ErrNoEtcd
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: e.Endpoints,
		TLS:       e.TLS,
		Logger:    zap.NewNop(),
		Context:   context.WithoutCancel(ctx),
		// No RejectOldCluster: its version check in clientv3.New waits for
		// an answer from etcd (without a DialTimeout, forever), and Dial
		// must return while etcd is down. With a quorum lost the
		// linearizable reads fail and the client tries another member.
		//
		// Keepalive finds a member that went silent (a partition) and
		// moves the watches elsewhere.
		DialKeepAliveTime:    dial.KeepaliveTime / 3,
		DialKeepAliveTimeout: dial.KeepaliveTimeout / 2,
		// The connect backoff of pkg/dial, not gRPC's 120 s maximum: after
		// an outage of etcd every service reconnects within seconds of
		// its return, not minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  dial.ConnectBaseDelay,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   dial.ConnectMaxDelay,
			},
			MinConnectTimeout: dial.MinConnectTimeout,
		})},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("etcd %s: %w", strings.Join(e.Endpoints, ","), err)
	}
	st, err := topostore.New(cli, topostore.Options{Prefix: e.Prefix, Log: log})
	if err != nil {
		cli.Close()
		return nil, nil, fmt.Errorf("--etcd-prefix: %w", err)
	}
	return cli, st, nil
}

// Connect is Dial, then a check that etcd answers a linearizable read
// within DialTimeout, so a control plane without a quorum is found out at
// start, not at the first job.
func (e *Etcd) Connect(ctx context.Context, log *slog.Logger) (*clientv3.Client, *topostore.Store, error) {
	cli, st, err := e.Dial(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	timeout := e.DialTimeout
	if timeout <= 0 {
		timeout = DefaultEtcdDialTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.Get(cctx, st.TopologyKey(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, nil, fmt.Errorf("etcd %s did not answer within %v: %w", strings.Join(e.Endpoints, ","), timeout, err)
	}
	return cli, st, nil
}
