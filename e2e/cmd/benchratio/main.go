// Command benchratio reads `go test -bench` output on stdin, echoes it, and
// prints ratios between benchmarks of the same run, so every figure `make
// bench` prints comes with its baseline.
//
//	go test -bench . ./e2e | benchratio 'router get vs storage get=SingleKey/router-get:SingleKey/storage-get'
//
// Each argument is label=numerator:denominator, names matched as substrings
// of benchmark names; the ratio is given for every metric both lines carry
// (ns/op, ops/s, percentiles...). A side written name@unit picks one metric,
// so two metrics of one benchmark compare too:
//
//	'ingest / raw Badger=BulkLoad@MB/s-ingest:BulkLoad@MB/s-raw-badger'
package main

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

type result map[string]float64 // unit -> value

func main() {
	results := map[string]result{}
	var order []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // drop the -GOMAXPROCS suffix
			}
		}
		r := result{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				r[f[i+1]] = v
			}
		}
		if _, ok := results[name]; !ok {
			order = append(order, name)
		}
		results[name] = r
	}
	find := func(sub string) (string, result) {
		for _, n := range order {
			if strings.Contains(n, sub) {
				return n, results[n]
			}
		}
		return "", nil
	}
	if len(os.Args) > 1 {
		fmt.Println("\nratios (numerator / denominator, same run):")
	}
	failed := false
	for _, spec := range os.Args[1:] {
		label, pair, ok := strings.Cut(spec, "=")
		num, den, ok2 := strings.Cut(pair, ":")
		if !ok || !ok2 {
			fmt.Fprintf(os.Stderr, "benchratio: bad spec %q, want label=numerator:denominator\n", spec)
			os.Exit(2)
		}
		numName, numUnit, _ := strings.Cut(num, "@")
		denName, denUnit, _ := strings.Cut(den, "@")
		nn, nr := find(numName)
		dn, dr := find(denName)
		if nr == nil || dr == nil {
			fmt.Printf("  %-40s missing benchmark (%q or %q did not run)\n", label, numName, denName)
			failed = true
			continue
		}
		if numUnit != "" || denUnit != "" {
			nv, ok1 := nr[numUnit]
			dv, ok2 := dr[denUnit]
			if !ok1 || !ok2 || dv == 0 {
				fmt.Printf("  %-40s missing metric (%s of %s or %s of %s)\n", label, numUnit, nn, denUnit, dn)
				failed = true
				continue
			}
			fmt.Printf("  %-40s %.2fx  (%s %s / %s %s)\n", label, nv/dv, nn, numUnit, dn, denUnit)
			continue
		}
		var units []string
		for u := range nr {
			if _, ok := dr[u]; ok && dr[u] != 0 && u != "B/op" && u != "allocs/op" {
				units = append(units, u)
			}
		}
		sort.Strings(units)
		var parts []string
		for _, u := range units {
			parts = append(parts, fmt.Sprintf("%s %.2fx", u, nr[u]/dr[u]))
		}
		fmt.Printf("  %-40s %s  (%s / %s)\n", label, strings.Join(parts, ", "), nn, dn)
	}
	if failed {
		os.Exit(1)
	}
}
