package ctl_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletion: `slotkvctl completion bash|zsh` prints a script the
// shell accepts (bash -n, zsh -n) that, driven as the shell drives it,
// offers the subcommands, the bulkload verbs, each command's flags, the
// values of --verify, and files after a file flag.
func TestCompletion(t *testing.T) {
	t.Parallel()
	cases := []struct{ line, want string }{
		{"slotkvctl ''", "bootstrap topology info nodes migrate migrations bulkload dev-certs completion version help"},
		{"slotkvctl bu", "bulkload"},
		{"slotkvctl bulkload ''", "start watch list pause resume cancel"},
		{"slotkvctl bulkload start --m", "--manifest"},
		{"slotkvctl bulkload watch job-1 --d", "--downloader"},
		{"slotkvctl migrate --verify ''", "stream full"},
		{"slotkvctl migrate --migrator ''", ""}, // an address: nothing to offer
		{"slotkvctl nodes --st", "--storage"},
		{"slotkvctl completion ''", "bash zsh"},
		{"slotkvctl nodes --tls-ca DIR/ca.c", "DIR/ca.crt"},
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sh := range []struct {
		name string
		// driver sets the shell's completion state to the words of a
		// line and prints what the completion function offers.
		driver string
	}{
		{"bash", `t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _slotkvctl; echo "${COMPREPLY[*]}"; }`},
		// zsh: compadd and _files are the completion system's; stand-ins
		// print what they would offer for the word being completed.
		{"zsh", `compadd() { [[ $1 == -- ]] && shift; local w; local -a out; for w; do [[ $w == ${words[CURRENT]}* ]] && out+=($w); done; echo "$out"; }
_files() { print -l -- ${words[CURRENT]}*(N); }
t() { words=("$@"); CURRENT=${#words}; _slotkvctl || echo; }`},
	} {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			shell, err := exec.LookPath(sh.name)
			if err != nil {
				t.Skipf("%s is not installed", sh.name)
			}
			code, script, errOut := run(t, nil, "completion", sh.name)
			if code != 0 {
				t.Fatalf("completion %s: exit %d %s", sh.name, code, errOut)
			}
			file := filepath.Join(t.TempDir(), "slotkvctl."+sh.name)
			if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(shell, "-n", file).CombinedOutput(); err != nil {
				t.Fatalf("%s -n rejects the script: %v\n%s", sh.name, err, out)
			}
			var prog strings.Builder
			// The zsh script ends with compdef, which only compinit
			// defines: a no-op here.
			prog.WriteString("compdef() { :; }\nsource " + file + "\n" + sh.driver + "\n")
			for _, c := range cases {
				prog.WriteString("t " + strings.ReplaceAll(c.line, "DIR", dir) + "\n")
			}
			args := []string{"-c", prog.String()}
			if sh.name == "zsh" {
				args = append([]string{"-f"}, args...)
			}
			out, err := exec.Command(shell, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", sh.name, err, out)
			}
			got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			if len(got) != len(cases) {
				t.Fatalf("%d lines for %d completions:\n%s", len(got), len(cases), out)
			}
			for i, c := range cases {
				if want := strings.ReplaceAll(c.want, "DIR", dir); strings.TrimSpace(got[i]) != want {
					t.Errorf("%s: %s offers %q, want %q", sh.name, c.line, got[i], want)
				}
			}
		})
	}
	if code, _, errOut := run(t, nil, "completion", "fish"); code != 2 || !strings.Contains(errOut, "neither bash nor zsh") {
		t.Errorf("completion fish: exit %d %s", code, errOut)
	}
}
