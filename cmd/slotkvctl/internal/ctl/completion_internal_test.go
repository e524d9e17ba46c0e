package ctl

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCompletionFlagsExist: every flag the completion scripts offer is one
// its command accepts (each command is run with the flag and an empty
// value, plus a stray argument so none goes on to do anything).
func TestCompletionFlagsExist(t *testing.T) {
	t.Parallel()
	noEnv := func(string) (string, bool) { return "", false }
	for path, flags := range completions() {
		for _, f := range flags {
			if !strings.HasPrefix(f.name, "--") {
				continue
			}
			args := append(strings.Fields(path), f.name+"=", "stray-argument", "another")
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), args, &stdout, &stderr, noEnv)
			if code == 0 || strings.Contains(stderr.String(), "flag provided but not defined") {
				t.Errorf("slotkvctl %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
			}
		}
	}
}
