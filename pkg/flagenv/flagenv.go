// Package flagenv defines command-line flags that fall back to environment
// variables, so every slotkv binary can be configured the same way on a
// laptop (flags), in docker compose (environment) and in tests (both).
//
// Precedence, highest first: a flag given on the command line, a non-empty
// environment variable, the default written in code. The environment is
// read by Parse, not when the flag is defined, so a bad value is reported as
// an ordinary parse error that names the variable instead of being silently
// ignored or crashing at init time:
//
//	fs := flag.NewFlagSet("storage", flag.ContinueOnError)
//	addr := flagenv.String(fs, "grpc-addr", "SLOTKV_GRPC_ADDR", ":7000", "gRPC listen address")
//	if err := flagenv.Parse(fs, os.Args[1:]); err != nil { ... }
//
// Plain fs.Parse still parses the command line but does not look at the
// environment; always use flagenv.Parse for a FlagSet with env bindings.
package flagenv

import (
	"encoding"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// binding ties one flag of a FlagSet to its environment variable.
type binding struct {
	flag string
	env  string
}

// registry remembers the bindings of every FlagSet. It lives outside the
// FlagSet so that the helpers can keep the standard *flag.FlagSet type that
// every other flag-aware library already accepts.
var (
	mu       sync.Mutex
	registry = map[*flag.FlagSet][]binding{}
)

func bind(fs *flag.FlagSet, name, env string) {
	mu.Lock()
	defer mu.Unlock()
	registry[fs] = append(registry[fs], binding{flag: name, env: env})
}

func bindings(fs *flag.FlagSet) []binding {
	mu.Lock()
	defer mu.Unlock()
	return append([]binding(nil), registry[fs]...)
}

// usageWithEnv appends the variable name to the help text, so -h tells an
// operator which variable to set in a container.
func usageWithEnv(usage, env string) string {
	if env == "" {
		return usage
	}
	if usage == "" {
		return "(env " + env + ")"
	}
	return usage + " (env " + env + ")"
}

// String defines a string flag with an environment fallback.
func String(fs *flag.FlagSet, name, env, def, usage string) *string {
	p := fs.String(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// Int defines an int flag with an environment fallback.
func Int(fs *flag.FlagSet, name, env string, def int, usage string) *int {
	p := fs.Int(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// Int64 defines an int64 flag with an environment fallback.
func Int64(fs *flag.FlagSet, name, env string, def int64, usage string) *int64 {
	p := fs.Int64(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// Uint defines a uint flag with an environment fallback.
func Uint(fs *flag.FlagSet, name, env string, def uint, usage string) *uint {
	p := fs.Uint(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// Uint64 defines a uint64 flag with an environment fallback.
func Uint64(fs *flag.FlagSet, name, env string, def uint64, usage string) *uint64 {
	p := fs.Uint64(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// Float64 defines a float64 flag with an environment fallback.
func Float64(fs *flag.FlagSet, name, env string, def float64, usage string) *float64 {
	p := fs.Float64(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// Bool defines a bool flag with an environment fallback. The variable takes
// the values strconv.ParseBool accepts (1, t, true, 0, f, false, ...).
func Bool(fs *flag.FlagSet, name, env string, def bool, usage string) *bool {
	p := fs.Bool(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// Duration defines a time.Duration flag with an environment fallback; the
// variable uses time.ParseDuration syntax ("250ms", "1m30s").
func Duration(fs *flag.FlagSet, name, env string, def time.Duration, usage string) *time.Duration {
	p := fs.Duration(name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
	return p
}

// StringVar is String writing into p, for flags that fill a struct field.
func StringVar(fs *flag.FlagSet, p *string, name, env, def, usage string) {
	fs.StringVar(p, name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
}

// BoolVar is Bool writing into p.
func BoolVar(fs *flag.FlagSet, p *bool, name, env string, def bool, usage string) {
	fs.BoolVar(p, name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
}

// Float64Var is Float64 writing into p.
func Float64Var(fs *flag.FlagSet, p *float64, name, env string, def float64, usage string) {
	fs.Float64Var(p, name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
}

// DurationVar is Duration writing into p.
func DurationVar(fs *flag.FlagSet, p *time.Duration, name, env string, def time.Duration, usage string) {
	fs.DurationVar(p, name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
}

// Var defines a flag of any flag.Value with an environment fallback; the
// variable is applied with value.Set. Use it for domain types such as slot
// range sets.
func Var(fs *flag.FlagSet, value flag.Value, name, env, usage string) {
	fs.Var(value, name, usageWithEnv(usage, env))
	bind(fs, name, env)
}

// TextVar defines a flag backed by an encoding.TextUnmarshaler (for example
// slog.Level) with an environment fallback, like flag.FlagSet.TextVar.
func TextVar(fs *flag.FlagSet, p encoding.TextUnmarshaler, name, env string, def encoding.TextMarshaler, usage string) {
	fs.TextVar(p, name, def, usageWithEnv(usage, env))
	bind(fs, name, env)
}

// Parse applies the environment to fs and then parses args with fs.Parse.
// It honours fs's error handling: with flag.ContinueOnError (what tests and
// libraries should use) every bad environment value is returned, joined, as
// an error naming the variable; with flag.ExitOnError or flag.PanicOnError
// it reports the error the same way fs.Parse would.
func Parse(fs *flag.FlagSet, args []string) error {
	return ParseLookup(fs, args, os.LookupEnv)
}

// ParseLookup is Parse with an explicit environment, so tests can run in
// parallel without touching the process environment.
func ParseLookup(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	envErr := applyEnv(fs, lookup)
	// Parse the command line even when the environment was bad, so that -h
	// still works and a command-line error is not hidden behind an env one.
	if err := fs.Parse(args); err != nil {
		return err
	}
	if envErr == nil {
		return nil
	}
	switch fs.ErrorHandling() {
	case flag.ExitOnError:
		fmt.Fprintln(fs.Output(), envErr)
		fs.Usage()
		os.Exit(2)
	case flag.PanicOnError:
		panic(envErr)
	}
	return envErr
}

// applyEnv sets every bound flag whose variable is set and non-empty. It
// writes through flag.Value.Set rather than fs.Set so the flag does not count
// as "given on the command line" for fs.Visit, and it updates DefValue so the
// help output shows the default that is actually in effect.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	for _, b := range bindings(fs) {
		if b.env == "" {
			continue
		}
		val, ok := lookup(b.env)
		if !ok || val == "" {
			continue
		}
		f := fs.Lookup(b.flag)
		if f == nil {
			// Only reachable if the flag was defined on another FlagSet with
			// the same pointer, which cannot happen; keep it loud anyway.
			errs = append(errs, fmt.Errorf("flagenv: flag -%s bound to $%s is not defined", b.flag, b.env))
			continue
		}
		if err := f.Value.Set(val); err != nil {
			errs = append(errs, &EnvError{Env: b.env, Flag: b.flag, Value: val, Err: err})
			continue
		}
		f.DefValue = f.Value.String()
	}
	return errors.Join(errs...)
}

// EnvError reports an environment variable whose value the flag refused.
type EnvError struct {
	Env   string // variable name, e.g. SLOTKV_GRPC_ADDR
	Flag  string // flag name without the dash
	Value string // the value that was refused
	Err   error  // the flag.Value's parse error
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("invalid value %q for environment variable %s (flag -%s): %v", e.Value, e.Env, e.Flag, e.Err)
}

func (e *EnvError) Unwrap() error { return e.Err }

// SplitList splits comma-separated list values (a flag like --storage
// a,b,c, possibly given as several values) into their items, trimmed, with
// empty items dropped.
func SplitList(values ...string) []string {
	var out []string
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}
