package ctl

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

const completionUsage = `Usage:
  slotkvctl completion bash   (e.g. source <(slotkvctl completion bash) in ~/.bashrc)
  slotkvctl completion zsh    (e.g. source <(slotkvctl completion zsh) in ~/.zshrc,
                               after compinit)

Prints a script that completes slotkvctl's commands, their flags and the
values of --verify and of the file flags.
`

// Flag kinds for completion: what follows the flag.
const (
	flagBool  = "bool"  // nothing: the next word is a new flag
	flagValue = "value" // a value nobody can guess (an address, an id)
	flagFile  = "file"  // a path
)

type compFlag struct {
	name string
	kind string   // flagBool, flagValue or flagFile; flagValue when values is set
	vals []string // the values the flag takes, when they are few
}

// completions maps a command path ("", "bulkload", "bulkload start") to
// the words that may follow it: subcommands, or flags. It mirrors the flag
// sets of Main and its subcommands; TestCompletionFlagsExist checks that
// every flag named here is one the command accepts.
func completions() map[string][]compFlag {
	client := []compFlag{
		{name: "--token", kind: flagValue}, {name: "--admin-token", kind: flagValue}, {name: "--admin-token-file", kind: flagFile},
		{name: "--tls", kind: flagBool}, {name: "--tls-ca", kind: flagFile},
		{name: "--tls-client-cert", kind: flagFile}, {name: "--tls-client-key", kind: flagFile},
		{name: "--json", kind: flagBool},
	}
	with := func(extra ...compFlag) []compFlag { return append(slices.Clone(extra), client...) }
	words := func(ws ...string) []compFlag {
		var out []compFlag
		for _, w := range ws {
			out = append(out, compFlag{name: w})
		}
		return out
	}
	storage := []compFlag{{name: "--storage", kind: flagValue}, {name: "--timeout", kind: flagValue}}
	etcd := append(slices.Clone(storage), compFlag{name: "--etcd-endpoints", kind: flagValue}, compFlag{name: "--etcd-prefix", kind: flagValue},
		compFlag{name: "--etcd-dial-timeout", kind: flagValue}, compFlag{name: "--etcd-ca", kind: flagFile},
		compFlag{name: "--etcd-cert", kind: flagFile}, compFlag{name: "--etcd-key", kind: flagFile})
	migrator := compFlag{name: "--migrator", kind: flagValue}
	downloader := compFlag{name: "--downloader", kind: flagValue}
	return map[string][]compFlag{
		"": words("bootstrap", "topology", "info", "nodes", "migrate", "migrations", "bulkload",
			"dev-certs", "completion", "version", "help"),
		"bootstrap": with(append(slices.Clone(etcd), compFlag{name: "--ranges", kind: flagValue})...),
		"topology":  with(etcd...),
		"info":      with(storage...),
		"nodes":     with(etcd...),
		"migrate": with(migrator, compFlag{name: "--source", kind: flagValue}, compFlag{name: "--destination", kind: flagValue},
			compFlag{name: "--ranges", kind: flagValue}, compFlag{name: "--parallelism", kind: flagValue},
			compFlag{name: "--rate", kind: flagValue}, compFlag{name: "--batch", kind: flagValue},
			compFlag{name: "--job-id", kind: flagValue}, compFlag{name: "--verify", vals: []string{"stream", "full"}},
			compFlag{name: "--watch", kind: flagValue}),
		"migrations": with(migrator),
		"bulkload":   words("start", "watch", "list", "pause", "resume", "cancel"),
		"bulkload start": with(downloader, compFlag{name: "--manifest", kind: flagValue},
			compFlag{name: "--job-id", kind: flagValue}, compFlag{name: "--watch", kind: flagBool}),
		"bulkload watch":  with(downloader),
		"bulkload list":   with(downloader),
		"bulkload pause":  with(downloader),
		"bulkload resume": with(downloader),
		"bulkload cancel": with(downloader),
		"dev-certs": {{name: "--out", kind: flagFile}, {name: "--hosts", kind: flagValue},
			{name: "--key-perm", kind: flagValue}},
		"completion": words("bash", "zsh"),
	}
}

// mainCompletion runs "completion bash|zsh".
func mainCompletion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, completionUsage)
		return 2
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(stdout, completionFunctions()+bashDriver)
	case "zsh":
		fmt.Fprint(stdout, "#compdef slotkvctl\n"+completionFunctions()+zshDriver)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, completionUsage)
	default:
		fmt.Fprintf(stderr, "slotkvctl completion: %q is neither bash nor zsh\n\n%s", args[0], completionUsage)
		return 2
	}
	return 0
}

// completionFunctions writes the two lookups both shells' drivers use, in
// the shell language bash and zsh share: _slotkvctl_words PATH prints the
// words that may follow a command path, and _slotkvctl_value PATH FLAG
// prints what FLAG takes ("bool", "value", "file" or "enum V1 V2").
func completionFunctions() string {
	comps := completions()
	paths := make([]string, 0, len(comps))
	for p := range comps {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var b strings.Builder
	b.WriteString("# Completion for slotkvctl, written by `slotkvctl completion`.\n")
	b.WriteString("_slotkvctl_words() {\n  case \"$1\" in\n")
	for _, p := range paths {
		var ws []string
		for _, f := range comps[p] {
			ws = append(ws, f.name)
		}
		fmt.Fprintf(&b, "  %q) echo %q ;;\n", p, strings.Join(ws, " "))
	}
	b.WriteString("  esac\n}\n")
	b.WriteString("_slotkvctl_value() {\n  case \"$1 $2\" in\n")
	for _, p := range paths {
		for _, f := range comps[p] {
			kind := f.kind
			if len(f.vals) > 0 {
				kind = "enum " + strings.Join(f.vals, " ")
			}
			if kind != "" {
				fmt.Fprintf(&b, "  %q) echo %q ;;\n", p+" "+f.name, kind)
			}
		}
	}
	b.WriteString("  esac\n}\n")
	// _slotkvctl_path: the command path named by words 2..N-1 of the
	// line (the words before the cursor), stopping at the first word
	// that is no subcommand (a flag, a value, a job id).
	b.WriteString(`_slotkvctl_path() {
  local cpath="" w next
  for w in "$@"; do
    case "$w" in -*) break ;; esac
    next="${cpath:+$cpath }$w"
    case " $(_slotkvctl_words "$cpath") " in
      *" $w "*) [ -n "$(_slotkvctl_words "$next")" ] || break; cpath=$next ;;
      *) break ;;
    esac
  done
  echo "$cpath"
}
`)
	return b.String()
}

const bashDriver = `_slotkvctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cpath kind
  cpath=$(_slotkvctl_path "${COMP_WORDS[@]:1:COMP_CWORD-1}")
  kind=$(_slotkvctl_value "$cpath" "$prev")
  case "$kind" in
    file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    value) COMPREPLY=(); return ;;
    enum*) COMPREPLY=($(compgen -W "${kind#enum }" -- "$cur")); return ;;
  esac
  COMPREPLY=($(compgen -W "$(_slotkvctl_words "$cpath")" -- "$cur"))
}
complete -F _slotkvctl slotkvctl
`

const zshDriver = `_slotkvctl() {
  local cpath kind
  cpath=$(_slotkvctl_path "${(@)words[2,CURRENT-1]}")
  kind=$(_slotkvctl_value "$cpath" "${words[CURRENT-1]}")
  case "$kind" in
    file) _files; return ;;
    value) return 1 ;;
    enum*) compadd -- ${=kind#enum } ; return ;;
  esac
  compadd -- ${=$(_slotkvctl_words "$cpath")}
}
compdef _slotkvctl slotkvctl
`
