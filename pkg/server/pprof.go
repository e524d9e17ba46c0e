package server

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/flagenv"
)

// PprofPath is where net/http/pprof is served on every service's HTTP
// port: the index, cmdline, profile, symbol, trace and the named profiles
// (heap, goroutine, allocs, threadcreate, mutex, block) under it.
const PprofPath = "/debug/pprof/"

// registerPprof serves net/http/pprof under PprofPath behind the admin
// token: profiles show code paths, arguments (cmdline) and memory, and a
// CPU profile or trace costs the service CPU while it runs, so only an
// operator of the cluster may ask for one. Registered here, on the mux
// every service shares, and not on http.DefaultServeMux, so nothing else
// can expose it by accident.
func registerPprof(mux *http.ServeMux, tokens auth.Tokens) {
	handle := func(path string, h http.HandlerFunc) {
		mux.Handle(path, auth.RequireHTTP(tokens, auth.Admin, h))
	}
	// Index also serves every named profile: /debug/pprof/mutex, /block...
	handle(PprofPath, pprof.Index)
	handle(PprofPath+"cmdline", pprof.Cmdline)
	handle(PprofPath+"profile", pprof.Profile)
	handle(PprofPath+"symbol", pprof.Symbol)
	handle(PprofPath+"trace", pprof.Trace)
}

// Environment variables of the profiling flags.
const (
	EnvMutexProfileFraction = "SLOTKV_MUTEX_PROFILE_FRACTION"
	EnvBlockProfileRate     = "SLOTKV_BLOCK_PROFILE_RATE"
)

// Profiling holds the runtime sampling rates behind the mutex and block
// profiles. Both are off (0) by default: they cost every contended lock
// and every blocking operation something, so an operator turns them on for
// a measurement.
type Profiling struct {
	// MutexProfileFraction: on average 1/n contention events are
	// reported (runtime.SetMutexProfileFraction); 0 off.
	MutexProfileFraction int
	// BlockProfileRate: one blocking event sampled per this many
	// nanoseconds spent blocked (runtime.SetBlockProfileRate); 0 off.
	BlockProfileRate int
}

// ProfilingFlags defines --mutex-profile-fraction and --block-profile-rate
// (with their SLOTKV_ environment fallbacks) on fs; after flagenv.Parse the
// returned value holds them, ready for MainConfig.Profiling.
func ProfilingFlags(fs *flag.FlagSet) *Profiling {
	p := &Profiling{}
	flagenv.Var(fs, nonNegative{&p.MutexProfileFraction}, "mutex-profile-fraction", EnvMutexProfileFraction,
		"report 1/n of mutex contention events in "+PprofPath+"mutex (0: off)")
	flagenv.Var(fs, nonNegative{&p.BlockProfileRate}, "block-profile-rate", EnvBlockProfileRate,
		"sample one blocking event per n ns spent blocked in "+PprofPath+"block (0: off)")
	return p
}

// ProfilingFromEnv reads the profiling rates from the environment only;
// Main uses it for a service whose flags do not include ProfilingFlags,
// so the variables work for every service either way.
func ProfilingFromEnv(lookup func(string) (string, bool)) (Profiling, error) {
	var p Profiling
	var errs []error
	for _, v := range []struct {
		env string
		dst *int
	}{{EnvMutexProfileFraction, &p.MutexProfileFraction}, {EnvBlockProfileRate, &p.BlockProfileRate}} {
		s, ok := lookup(v.env)
		if !ok || s == "" {
			continue
		}
		if err := (nonNegative{v.dst}).Set(s); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s=%q: %w", v.env, s, err))
		}
	}
	return p, errors.Join(errs...)
}

// Apply sets the runtime's rates. A zero leaves the runtime's own setting
// (off unless the program changed it), so Apply of a zero Profiling is a
// no-op, safe in tests that run Main several times.
func (p Profiling) Apply() {
	if p.MutexProfileFraction > 0 {
		runtime.SetMutexProfileFraction(p.MutexProfileFraction)
	}
	if p.BlockProfileRate > 0 {
		runtime.SetBlockProfileRate(p.BlockProfileRate)
	}
}

// nonNegative is an int flag value that refuses negative numbers (the
// runtime reads a negative mutex fraction as "query only", which would
// silently leave profiling off).
type nonNegative struct{ p *int }

func (v nonNegative) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

func (v nonNegative) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not an integer: %q", s)
	}
	if n < 0 {
		return fmt.Errorf("%d is negative", n)
	}
	*v.p = n
	return nil
}
