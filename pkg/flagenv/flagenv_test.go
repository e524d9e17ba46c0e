package flagenv

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

type values struct {
	s   *string
	i   *int
	i64 *int64
	u   *uint
	u64 *uint64
	f   *float64
	b   *bool
	d   *time.Duration
	lvl slog.Level
}

func define(fs *flag.FlagSet) *values {
	v := &values{
		s:   String(fs, "addr", "T_ADDR", ":7000", "listen address"),
		i:   Int(fs, "n", "T_N", 3, "count"),
		i64: Int64(fs, "big", "T_BIG", -1, "big"),
		u:   Uint(fs, "u", "T_U", 1, "u"),
		u64: Uint64(fs, "u64", "T_U64", 2, "u64"),
		f:   Float64(fs, "ratio", "T_RATIO", 0.5, "ratio"),
		b:   Bool(fs, "json", "T_JSON", false, "json logs"),
		d:   Duration(fs, "timeout", "T_TIMEOUT", time.Second, "timeout"),
	}
	TextVar(fs, &v.lvl, "log-level", "T_LEVEL", slog.LevelInfo, "log level")
	return v
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, v *values)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, v *values) {
				if *v.s != ":7000" || *v.i != 3 || *v.i64 != -1 || *v.u != 1 || *v.u64 != 2 ||
					*v.f != 0.5 || *v.b || *v.d != time.Second || v.lvl != slog.LevelInfo {
					t.Errorf("unexpected defaults: %+v", v)
				}
			},
		},
		{
			name: "env replaces defaults",
			env: map[string]string{
				"T_ADDR": ":9000", "T_N": "7", "T_BIG": "1099511627776", "T_U": "5", "T_U64": "18446744073709551615",
				"T_RATIO": "0.25", "T_JSON": "true", "T_TIMEOUT": "1m30s", "T_LEVEL": "debug",
			},
			check: func(t *testing.T, v *values) {
				if *v.s != ":9000" || *v.i != 7 || *v.i64 != 1<<40 || *v.u != 5 || *v.u64 != 1<<64-1 ||
					*v.f != 0.25 || !*v.b || *v.d != 90*time.Second || v.lvl != slog.LevelDebug {
					t.Errorf("env not applied: s=%q i=%d i64=%d u=%d u64=%d f=%v b=%v d=%v lvl=%v",
						*v.s, *v.i, *v.i64, *v.u, *v.u64, *v.f, *v.b, *v.d, v.lvl)
				}
			},
		},
		{
			name: "empty env is unset",
			env:  map[string]string{"T_ADDR": "", "T_N": ""},
			check: func(t *testing.T, v *values) {
				if *v.s != ":7000" || *v.i != 3 {
					t.Errorf("empty env applied: s=%q i=%d", *v.s, *v.i)
				}
			},
		},
		{
			name: "command line beats env",
			env:  map[string]string{"T_ADDR": ":9000", "T_N": "7", "T_JSON": "true"},
			args: []string{"-addr", ":1234", "-json=false"},
			check: func(t *testing.T, v *values) {
				if *v.s != ":1234" || *v.i != 7 || *v.b {
					t.Errorf("precedence wrong: s=%q i=%d b=%v", *v.s, *v.i, *v.b)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			v := define(fs)
			if err := ParseLookup(fs, tt.args, env(tt.env)); err != nil {
				t.Fatalf("ParseLookup: %v", err)
			}
			tt.check(t, v)
		})
	}
}

func TestParseBadEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantEnv []string // variables the error must name
	}{
		{name: "int", env: map[string]string{"T_N": "abc"}, wantEnv: []string{"T_N"}},
		{name: "duration", env: map[string]string{"T_TIMEOUT": "5"}, wantEnv: []string{"T_TIMEOUT"}},
		{name: "bool", env: map[string]string{"T_JSON": "yes please"}, wantEnv: []string{"T_JSON"}},
		{name: "negative uint", env: map[string]string{"T_U64": "-1"}, wantEnv: []string{"T_U64"}},
		{name: "level", env: map[string]string{"T_LEVEL": "loud"}, wantEnv: []string{"T_LEVEL"}},
		{name: "several", env: map[string]string{"T_N": "x", "T_RATIO": "y"}, wantEnv: []string{"T_N", "T_RATIO"}},
		// A broken variable is a configuration mistake even when the command
		// line happens to override it, so it is still reported.
		{name: "overridden", env: map[string]string{"T_N": "x"}, args: []string{"-n", "4"}, wantEnv: []string{"T_N"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			define(fs)
			err := ParseLookup(fs, tt.args, env(tt.env))
			if err == nil {
				t.Fatal("ParseLookup succeeded, want error")
			}
			for _, name := range tt.wantEnv {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %s", err, name)
				}
			}
			var ee *EnvError
			if !errors.As(err, &ee) {
				t.Errorf("error %T is not an *EnvError", err)
			}
		})
	}
}

func TestUsageShowsEnv(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(&out)
	define(fs)
	err := ParseLookup(fs, []string{"-h"}, env(map[string]string{"T_ADDR": ":9000"}))
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"(env T_ADDR)", "(env T_TIMEOUT)", `(default ":9000")`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCommandLineVisit(t *testing.T) {
	t.Parallel()
	// Values taken from the environment must not look as if they came from
	// the command line, so callers can still tell the two apart.
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	define(fs)
	if err := ParseLookup(fs, []string{"-n", "2"}, env(map[string]string{"T_ADDR": ":9000"})); err != nil {
		t.Fatal(err)
	}
	var set []string
	fs.Visit(func(f *flag.Flag) { set = append(set, f.Name) })
	if len(set) != 1 || set[0] != "n" {
		t.Errorf("flags set on the command line = %v, want [n]", set)
	}
}

func TestParseUsesProcessEnv(t *testing.T) {
	// Not parallel: t.Setenv changes the process environment.
	t.Setenv("FLAGENV_TEST_PORT", "8080")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	p := Int(fs, "port", "FLAGENV_TEST_PORT", 1, "port")
	if err := Parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *p != 8080 {
		t.Errorf("port = %d, want 8080", *p)
	}
}

func TestSplitList(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{""}, nil},
		{[]string{"a,b"}, []string{"a", "b"}},
		{[]string{" a , ,b ", "c"}, []string{"a", "b", "c"}},
	} {
		if got := SplitList(tc.in...); !slices.Equal(got, tc.want) {
			t.Errorf("SplitList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
