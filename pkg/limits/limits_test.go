package limits

import (
	"errors"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

func TestChecks(t *testing.T) {
	t.Parallel()
	def := KV{}.WithDefaults()
	small := KV{MaxKeyBytes: 4, MaxValueBytes: 8}
	tests := []struct {
		name      string
		check     func(field string, n int) error
		field     string
		n         int
		wantError string // "" = accepted
	}{
		{"default key at the limit", def.CheckKeySize, "key", DefaultMaxKeyBytes, ""},
		{"default key above the limit", def.CheckKeySize, "key", DefaultMaxKeyBytes + 1, "--max-key-bytes=16384"},
		{"default value at the limit", def.CheckValueSize, "value", DefaultMaxValueBytes, ""},
		{"default value above the limit", def.CheckValueSize, "entries[3].value", DefaultMaxValueBytes + 1, "--max-value-bytes=4194304"},
		{"configured key limit", small.CheckKeySize, "keys[1]", 5, "key is 5 bytes, above the limit --max-key-bytes=4"},
		{"configured value limit", small.CheckValueSize, "text", 9, "value is 9 bytes, above the limit --max-value-bytes=8"},
		{"configured value fits", small.CheckValueSize, "text", 8, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.check(tt.field, tt.n)
			if tt.wantError == "" {
				if err != nil {
					t.Fatalf("check(%q, %d) = %v, want nil", tt.field, tt.n, err)
				}
				return
			}
			var fe *rpcerr.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(fe.Reason, tt.wantError) {
				t.Fatalf("check(%q, %d) = %v, want a FieldError on %q containing %q", tt.field, tt.n, err, tt.field, tt.wantError)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   KV
		want KV
	}{
		{"zero", KV{}, KV{DefaultMaxKeyBytes, DefaultMaxValueBytes}},
		{"negative", KV{-1, -1}, KV{DefaultMaxKeyBytes, DefaultMaxValueBytes}},
		{"set", KV{10, 20}, KV{10, 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.in.WithDefaults(); got != tt.want {
				t.Fatalf("%+v.WithDefaults() = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		l         KV
		wantError string // "" = valid
	}{
		{"zero takes the defaults", KV{}, ""},
		{"largest key limit", KV{MaxKeyBytes: MaxKeyBytesLimit, MaxValueBytes: 1}, ""},
		{"key limit above Badger's", KV{MaxKeyBytes: MaxKeyBytesLimit + 1}, "--max-key-bytes=64999 is above"},
		{"negative key limit", KV{MaxKeyBytes: -1}, "--max-key-bytes=-1"},
		{"negative value limit", KV{MaxValueBytes: -5}, "--max-value-bytes=-5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.l.Validate()
			if tt.wantError == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantError) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantError)
			}
		})
	}
}
