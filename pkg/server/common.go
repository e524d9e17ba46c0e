package server

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/tlsconfig"
)

// Common is the part of every service's Options that the shared flags set
// (see Flags): where the service listens, how long it may take to stop, and
// how it is secured. Services embed it in their Options, so one struct, one
// set of flags and one set of checks serve all four of them.
type Common struct {
	// GRPCAddr and HTTPAddr are the listen addresses; port 0 picks a free
	// port, HTTPAddr "" disables HTTP (REST and the probes).
	GRPCAddr, HTTPAddr string
	// ShutdownTimeout bounds graceful shutdown; zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Tokens are the data and admin tokens required from callers (see
	// pkg/auth); the admin token is also what the service sends to the
	// storage nodes. Both empty means an open cluster.
	Tokens auth.Tokens
	// Insecure allows an open cluster (no token) to listen on an address
	// other than loopback. Without it such a start is refused (see
	// CheckExposure): an open cluster on a reachable port lets anyone read,
	// write and migrate.
	Insecure bool
	// TLS, when set, serves both ports over TLS; ClientTLS is then the
	// configuration of the gateway's loopback connection (see Options).
	TLS, ClientTLS *tls.Config
	// PeerTLS, when set, is used to dial other slotkv services (the storage
	// nodes); nil dials them in plaintext.
	PeerTLS *tls.Config
	// Etcd is the control plane (--etcd-endpoints); empty Endpoints means
	// none.
	Etcd Etcd
	// AdvertiseGRPC and AdvertiseHTTP are the addresses this process
	// reports to others (a storage node's registration and node info, the
	// leading replica's address that followers forward to). Empty means
	// the bound address, with a wildcard host (0.0.0.0, [::]) replaced by
	// the machine's hostname.
	AdvertiseGRPC, AdvertiseHTTP string
}

// Flags is the command line every service binary shares: Common plus what
// Main needs (log level, trace sampling, listen file, profiling). Register
// defines the flags, each with its SLOTKV_* environment fallback; after
// flagenv.Parse, Finish reads the token and certificate files into Common
// and checks the result.
type Flags struct {
	Common
	ListenFile  string     // --listen-file
	LogLevel    slog.Level // --log-level
	SampleRatio float64    // --trace-sample-ratio
	ShowVersion bool       // --version
	Profiling   *Profiling // --mutex-profile-fraction, --block-profile-rate

	// The token flags, turned into Common.Tokens by Finish.
	token, dataToken, dataTokenFile, adminToken, adminTokenFile string
	// The TLS flags, turned into Common.TLS, ClientTLS and PeerTLS by
	// Finish.
	tls TLSFiles
}

// TLSFiles are the PEM files of a service's TLS flags.
type TLSFiles struct {
	Cert, Key  string // --tls-cert, --tls-key: serve both ports over TLS
	ClientCA   string // --tls-client-ca: require client certificates it signed (mTLS)
	CA         string // --tls-ca: verify the services this one dials
	ClientCert string // --tls-client-cert, --tls-client-key: present to them
	ClientKey  string
}

// Configs builds the server configuration (nil without Cert), the
// gateway's loopback configuration, and the configuration to dial other
// services with (nil, plaintext, unless CA or Cert is set: a service that
// serves TLS expects its peers to as well). When the dialed services ask
// for a client certificate, the service presents ClientCert, or its own
// Cert when no ClientCert is given. Errors name the flag and the file.
func (f TLSFiles) Configs() (server, loopback, peer *tls.Config, err error) {
	switch {
	case f.Cert == "" && f.Key != "", f.Cert != "" && f.Key == "":
		return nil, nil, nil, errors.New("--tls-cert and --tls-key go together: give both or neither")
	case f.Cert == "" && f.ClientCA != "":
		return nil, nil, nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked on TLS connections only")
	case (f.ClientCert == "") != (f.ClientKey == ""):
		return nil, nil, nil, errors.New("--tls-client-cert and --tls-client-key go together: give both or neither")
	}
	clientCert, clientKey := f.ClientCert, f.ClientKey
	if f.Cert != "" {
		if server, err = tlsconfig.Server(f.Cert, f.Key, f.ClientCA); err != nil {
			return nil, nil, nil, fmt.Errorf("--tls-cert/--tls-key/--tls-client-ca: %w", err)
		}
		var present *tls.Certificate
		if clientCert != "" {
			c, err := tlsconfig.LoadKeyPair(clientCert, clientKey)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("--tls-client-cert/--tls-client-key: %w", err)
			}
			present = &c
		}
		loopback = tlsconfig.Loopback(server.Certificates[0], present)
		if clientCert == "" {
			clientCert, clientKey = f.Cert, f.Key
		}
	}
	if f.CA != "" || f.Cert != "" {
		if peer, err = tlsconfig.Client(f.CA, clientCert, clientKey); err != nil {
			return nil, nil, nil, fmt.Errorf("--tls-ca/--tls-client-cert: %w", err)
		}
	}
	return server, loopback, peer, nil
}

// register defines the TLS file flags of a service.
func (f *TLSFiles) register(fs *flag.FlagSet) {
	flagenv.StringVar(fs, &f.Cert, "tls-cert", EnvTLSCert, "", "PEM certificate: serve gRPC and HTTP over TLS (with --tls-key)")
	flagenv.StringVar(fs, &f.Key, "tls-key", EnvTLSKey, "", "PEM private key of --tls-cert")
	flagenv.StringVar(fs, &f.ClientCA, "tls-client-ca", "SLOTKV_TLS_CLIENT_CA", "", "PEM CA certificates: require every client to present a certificate they signed (mTLS)")
	flagenv.StringVar(fs, &f.CA, "tls-ca", "SLOTKV_TLS_CA", "", "PEM CA certificates to verify the storage nodes this service dials (TLS to them also when --tls-cert is set; system roots without this)")
	flagenv.StringVar(fs, &f.ClientCert, "tls-client-cert", "SLOTKV_TLS_CLIENT_CERT", "", "PEM certificate presented to the storage nodes under mTLS (default: --tls-cert)")
	flagenv.StringVar(fs, &f.ClientKey, "tls-client-key", "SLOTKV_TLS_CLIENT_KEY", "", "PEM private key of --tls-client-cert")
}

// Environment variables of the shared flags that other code reads too.
const (
	EnvGRPCAddr = "SLOTKV_GRPC_ADDR"
	EnvHTTPAddr = "SLOTKV_HTTP_ADDR"
	EnvInsecure = "SLOTKV_INSECURE"
	EnvTLSCert  = "SLOTKV_TLS_CERT"
	EnvTLSKey   = "SLOTKV_TLS_KEY"
)

// Register defines the shared flags on fs, with defaults taken from d (the
// service's DefaultOptions().Common), and binds them to f.
func (f *Flags) Register(fs *flag.FlagSet, d Common) {
	f.Common = d
	if f.ShutdownTimeout == 0 {
		f.ShutdownTimeout = DefaultShutdownTimeout
	}
	flagenv.StringVar(fs, &f.GRPCAddr, "grpc-addr", EnvGRPCAddr, d.GRPCAddr, "gRPC listen address (port 0 picks a free port; beyond loopback only with a token or --insecure)")
	flagenv.StringVar(fs, &f.HTTPAddr, "http-addr", EnvHTTPAddr, d.HTTPAddr, `REST/probe listen address ("" disables HTTP)`)
	flagenv.StringVar(fs, &f.token, "token", "SLOTKV_TOKEN", "", "one token for everything: sets both --data-token and --admin-token (those override it)")
	flagenv.StringVar(fs, &f.dataToken, "data-token", "SLOTKV_DATA_TOKEN", "", "token that opens the router's key-value API (the admin token opens it too)")
	flagenv.StringVar(fs, &f.dataTokenFile, "data-token-file", "SLOTKV_DATA_TOKEN_FILE", "", "read --data-token from this file (e.g. a Kubernetes secret)")
	flagenv.StringVar(fs, &f.adminToken, "admin-token", "SLOTKV_ADMIN_TOKEN", "", "token that opens everything: migrations, bulk loads, topology, storage nodes, /metrics, pprof; sent to the storage nodes")
	flagenv.StringVar(fs, &f.adminTokenFile, "admin-token-file", "SLOTKV_ADMIN_TOKEN_FILE", "", "read --admin-token from this file (e.g. a Kubernetes secret)")
	flagenv.StringVar(fs, &f.AdvertiseGRPC, "advertise-grpc", "SLOTKV_ADVERTISE_GRPC", d.AdvertiseGRPC, "gRPC address reported to others (default: the bound address)")
	flagenv.StringVar(fs, &f.AdvertiseHTTP, "advertise-http", "SLOTKV_ADVERTISE_HTTP", d.AdvertiseHTTP, "HTTP address reported to others (default: the bound address)")
	flagenv.BoolVar(fs, &f.Insecure, "insecure", EnvInsecure, false, "allow an open cluster (no token) to listen on a non-loopback address")
	flagenv.DurationVar(fs, &f.ShutdownTimeout, "shutdown-timeout", "SLOTKV_SHUTDOWN_TIMEOUT", f.ShutdownTimeout, "bound on graceful shutdown")
	flagenv.StringVar(fs, &f.ListenFile, "listen-file", "SLOTKV_LISTEN_FILE", "", `write {"grpc":...,"http":...} here once listening`)
	flagenv.Float64Var(fs, &f.SampleRatio, "trace-sample-ratio", "SLOTKV_TRACE_SAMPLE_RATIO", 1, "fraction of new traces sampled (0-1)")
	f.tls.register(fs)
	f.Etcd.RegisterFlags(fs)
	flagenv.TextVar(fs, &f.LogLevel, "log-level", "SLOTKV_LOG_LEVEL", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.BoolVar(&f.ShowVersion, "version", false, "print the version and exit")
	f.Profiling = ProfilingFlags(fs)
}

// Finish completes the parsed flags: it reads the token files and checks
// the sample ratio's range, the tokens (auth.Tokens.Validate) and that an
// open cluster listens on loopback only (CheckExposure). Errors name the
// flag (and file).
func (f *Flags) Finish() error {
	if f.SampleRatio < 0 || f.SampleRatio > 1 {
		return fmt.Errorf("--trace-sample-ratio %v is outside [0, 1]", f.SampleRatio)
	}
	t := auth.OneToken(f.token)
	var err error
	if t.Data, err = tokenFlag("data-token", f.dataToken, f.dataTokenFile, t.Data); err != nil {
		return err
	}
	if t.Admin, err = tokenFlag("admin-token", f.adminToken, f.adminTokenFile, t.Admin); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return err
	}
	f.Tokens = t
	if f.TLS, f.ClientTLS, f.PeerTLS, err = f.tls.Configs(); err != nil {
		return err
	}
	if err := f.Etcd.Finish(); err != nil {
		return err
	}
	return CheckExposure(f.GRPCAddr, f.HTTPAddr, !t.Open(), f.Insecure)
}

// tokenFlag is the value of --NAME or --NAME-file, or def when neither is
// given. A token file is read once, at start (a mounted Kubernetes secret);
// its trailing newline is not part of the token.
func tokenFlag(name, value, file, def string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("--%s and --%s-file are both set: give one", name, name)
	case value != "":
		return value, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--%s-file: %w", name, err)
		}
		tok := strings.TrimRight(string(b), "\r\n")
		if tok == "" {
			return "", fmt.Errorf("--%s-file %s is empty", name, file)
		}
		return tok, nil
	}
	return def, nil
}

// MainConfig is the configuration Main takes, from the flags.
func (f *Flags) MainConfig(name string, stderr io.Writer) MainConfig {
	return MainConfig{Name: name, LogLevel: f.LogLevel, SampleRatio: f.SampleRatio, ListenFile: f.ListenFile, Stderr: stderr, Profiling: f.Profiling}
}

// CheckExposure refuses an open cluster (hasToken false) that would listen
// on an address other than loopback, unless insecure: without a token every
// caller that reaches the port can read, write, migrate and profile, so
// that must be a decision (--insecure), not a default. The error names the
// flags that fix it.
func CheckExposure(grpcAddr, httpAddr string, hasToken, insecure bool) error {
	return checkExposure(hasToken, insecure, listenFlag{"--grpc-addr", grpcAddr}, listenFlag{"--http-addr", httpAddr})
}

// CheckListenExposure is CheckExposure for one more listener, named by its
// flag (the RESP listener's --resp-addr).
func CheckListenExposure(flag, addr string, hasToken, insecure bool) error {
	return checkExposure(hasToken, insecure, listenFlag{flag, addr})
}

type listenFlag struct{ flag, addr string }

func checkExposure(hasToken, insecure bool, flags ...listenFlag) error {
	if hasToken || insecure {
		return nil
	}
	var exposed []string
	for _, a := range flags {
		if a.addr != "" && !IsLoopback(a.addr) {
			exposed = append(exposed, fmt.Sprintf("%s %q", a.flag, a.addr))
		}
	}
	if len(exposed) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s is not a loopback address and no token is set: set --admin-token and --data-token (or --token), or pass --insecure (%s=true) to serve an open cluster there",
		ErrExposed, strings.Join(exposed, " and "), EnvInsecure)
}

// ErrExposed is CheckExposure's error.
var ErrExposed = errors.New("refusing to serve an open cluster beyond loopback")

// IsLoopback reports whether a listen address binds loopback only: host
// localhost or a loopback IP (127.0.0.0/8, ::1). An empty host, 0.0.0.0,
// [::] and every other name or address bind more.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
