package tool

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/slot"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := run(t, args...)
	if code != 0 {
		t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

func writeInput(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type kv struct {
	slot       uint16
	key, value string
	file       int
}

// loadDataset parses the manifest of dir, checks every file against it
// independently of dataset.VerifyFile (size, sha256, keys, slots, first and
// last key), and returns all records in file order.
func loadDataset(t *testing.T, dir string) (*dataset.Manifest, []kv) {
	t.Helper()
	mf, err := os.Open(filepath.Join(dir, dataset.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	m, err := dataset.ParseManifest(mf, dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var all []kv
	for i, f := range m.Files {
		if want := fmt.Sprintf("part-%05d.skv", i); f.Name != want {
			t.Errorf("files[%d].name = %q, want %q", i, f.Name, want)
		}
		data, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if int64(len(data)) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
			t.Errorf("%s: size %d sha256 %x, manifest says %d %s", f.Name, len(data), sum, f.Size, f.SHA256)
		}
		r, err := dataset.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		var recs []kv
		for {
			rec, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			recs = append(recs, kv{rec.Slot, string(rec.Key), string(rec.Value), i})
		}
		if len(recs) == 0 {
			t.Fatalf("%s: no records", f.Name)
		}
		first, last := recs[0], recs[len(recs)-1]
		if uint64(len(recs)) != f.Keys || first.key != f.FirstKey || last.key != f.LastKey || fmt.Sprintf("%d-%d", first.slot, last.slot) != f.Slots {
			t.Errorf("%s: %d keys %q..%q slots %d-%d, manifest says %+v", f.Name, len(recs), first.key, last.key, first.slot, last.slot, f)
		}
		all = append(all, recs...)
	}
	if uint64(len(all)) != m.Records {
		t.Errorf("%d records, manifest says %d", len(all), m.Records)
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.slot > b.slot || a.slot == b.slot && a.key >= b.key {
			t.Fatalf("records %d and %d out of order across files: %+v, %+v", i-1, i, a, b)
		}
	}
	return m, all
}

func asMap(recs []kv) map[string]string {
	m := make(map[string]string, len(recs))
	for _, r := range recs {
		m[r.key] = r.value
	}
	return m
}

func TestBuildJSONL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeInput(t, dir, "in.jsonl", "\ufeff"+`{"key":"alpha","value":"one"}
{"key": "{user1}.a", "value": "tagged a"}

  {"value":"tagged b","key":"{user1}.b"}  
{"key":"esc\"aped\\\n\u00e9\ud83d\ude00","value":"multi\nline\ttab"}
{"key":"bin","value_b64":"AAEC/w=="}
{"key":"empty-value","value":""}
{"key":"ünïcödé","value":"ok"}`+"\r\n"+`{"key":"last-no-newline","value":"x"}`)
	out := filepath.Join(dir, "ds")
	stdout := mustRun(t, "build", "--input", in, "--out", out)
	for _, s := range []string{"records:    8 written", "0 dropped", "0 skipped", "1 data files"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("summary does not contain %q:\n%s", s, stdout)
		}
	}
	_, recs := loadDataset(t, out)
	want := map[string]string{
		"alpha": "one", "{user1}.a": "tagged a", "{user1}.b": "tagged b",
		"esc\"aped\\\n\u00e9\U0001F600": "multi\nline\ttab", "bin": "\x00\x01\x02\xff",
		"empty-value": "", "ünïcödé": "ok", "last-no-newline": "x",
	}
	if got := asMap(recs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records:\n got %q\nwant %q", got, want)
	}
	if slot.OfString("{user1}.a") != slot.OfString("{user1}.b") {
		t.Fatal("hash tags broken")
	}
	mustRun(t, "verify", "--dir", out)
}

func TestBuildCSV(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeInput(t, dir, "in.csv", "key,value\n"+
		"a,1\n"+
		"\"b,with comma\",\"2 \"\"quoted\"\"\"\n"+
		"c,\"multi\nline\"\n"+
		"d,\n"+
		"e,5\n")
	out := filepath.Join(dir, "ds")
	mustRun(t, "build", "--input", in, "--out", out)
	_, recs := loadDataset(t, out)
	want := map[string]string{"a": "1", "b,with comma": `2 "quoted"`, "c": "multi\nline", "d": "", "e": "5"}
	if got := asMap(recs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records:\n got %q\nwant %q", got, want)
	}
	// Without a header the first row is data.
	in2 := writeInput(t, dir, "noheader.data", "x,1\ny,2\n")
	out2 := filepath.Join(dir, "ds2")
	mustRun(t, "build", "--input", in2, "--format", "csv", "--out", out2)
	if _, recs := loadDataset(t, out2); len(recs) != 2 {
		t.Errorf("%d records, want 2", len(recs))
	}
}

func TestBuildBadLines(t *testing.T) {
	t.Parallel()
	longKey := strings.Repeat("k", MaxKeyBytes+1)
	jsonl := strings.Join([]string{
		`{"key":"good1","value":"1"}`,                              // 1
		`{"key":"x","value":"1"`,                                   // 2 bad JSON
		`{"value":"1"}`,                                            // 3 missing key
		`{"key":"","value":"1"}`,                                   // 4 empty key
		`{"key":"` + longKey + `","value":"1"}`,                    // 5 key too long
		`{"key":"both","value":"1","value_b64":"AA=="}`,            // 6 both
		`{"key":"good2","value":"2"}`,                              // 7
		`{"key":"n","value":5}`,                                    // 8 not a string
		`{"key":"u","value":"1","ttl":3}`,                          // 9 unknown field
		`{"key":"b","value_b64":"!!!"}`,                            // 10 bad base64
		`{"key":"novalue"}`,                                        // 11 missing value
		`[1,2]`,                                                    // 12 not an object
		`{"key":"\ud800","value":"1"}`,                             // 13 lone surrogate
		`{"key":"big","value":"` + strings.Repeat("v", 101) + `"}`, // 14 value too long
	}, "\n")
	csvIn := "key,value\na,1\nb,2,3\nc\n\"d,4\n"
	wantJSONL := []string{
		"in.jsonl:2: bad JSON", "in.jsonl:3: missing key", "in.jsonl:4: empty key",
		fmt.Sprintf("in.jsonl:5: key is %d bytes, longer than %d", MaxKeyBytes+1, MaxKeyBytes),
		"in.jsonl:6: both value and value_b64", `in.jsonl:8: field "value" must be a JSON string`,
		`in.jsonl:9: unknown field "ttl"`, "in.jsonl:10: value_b64: invalid base64", "in.jsonl:11: missing value",
		"in.jsonl:12: bad JSON: not a JSON object", "in.jsonl:13: field \"key\": bad JSON at column", "in.jsonl:14: value is 101 bytes, longer than 100",
	}
	wantCSV := []string{"in.csv:3: 3 fields, want 2", "in.csv:4: 1 fields, want 2", "in.csv:5: bad CSV"}
	tests := []struct {
		name, file, content string
		maxBad              int
		wantCode            int
		want                []string
	}{
		{"jsonl over the limit", "in.jsonl", jsonl, 11, 1, append(wantJSONL, "too many bad input lines: 12, at most 11")},
		{"jsonl at the limit", "in.jsonl", jsonl, 12, 0, append(wantJSONL, "12 skipped", "records:    2 written")},
		{"csv over the limit", "in.csv", csvIn, 0, 1, append(wantCSV, "too many bad input lines: 3, at most 0")},
		{"csv below the limit", "in.csv", csvIn, 5, 0, append(wantCSV, "3 skipped", "records:    1 written")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in := writeInput(t, dir, tt.file, tt.content)
			out := filepath.Join(dir, "ds")
			code, stdout, stderr := run(t, "build", "--input", in, "--out", out, "--max-bad-lines", fmt.Sprint(tt.maxBad), "--max-value-bytes", "100")
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout, stderr)
			}
			all := strings.ReplaceAll(stdout+stderr, dir+string(filepath.Separator), "")
			for _, s := range tt.want {
				if !strings.Contains(all, s) {
					t.Errorf("output does not contain %q:\n%s", s, all)
				}
			}
			_, err := os.Stat(filepath.Join(out, dataset.ManifestName))
			if tt.wantCode != 0 {
				if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed build left %s behind (%v)", out, err)
				}
			} else if err != nil {
				t.Errorf("no manifest: %v", err)
			}
		})
	}
}

func TestBuildBadLinesListCapped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeInput(t, dir, "in.jsonl", strings.Repeat("not json\n", 25)+`{"key":"k","value":"v"}`+"\n")
	code, _, stderr := run(t, "build", "--input", in, "--out", filepath.Join(dir, "ds"))
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if n := strings.Count(stderr, "in.jsonl:"); n != maxListedBadLines {
		t.Errorf("%d bad lines listed, want %d:\n%s", n, maxListedBadLines, stderr)
	}
	if !strings.Contains(stderr, "in.jsonl:20: bad JSON") || !strings.Contains(stderr, "... and 5 more bad lines") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestBuildDuplicatesLastWins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := writeInput(t, dir, "a.jsonl", `{"key":"k1","value":"a1"}
{"key":"k2","value":"a2"}
{"key":"k1","value":"a1-again"}
{"key":"k3","value":"a3"}
{"key":"{t}x","value":"a4"}
`)
	b := writeInput(t, dir, "b.csv", "k2,b2\nk4,b4\nk1,b1\n{t}x,b5\n")
	c := writeInput(t, dir, "c.jsonl", `{"key":"k3","value_b64":"YzM="}`+"\n")
	out := filepath.Join(dir, "ds")
	stdout := mustRun(t, "build", "--input", a+","+b, "--input", c, "--out", out)
	if !strings.Contains(stdout, "duplicates: 5 dropped") || !strings.Contains(stdout, "10 records from 3 file(s)") {
		t.Errorf("summary:\n%s", stdout)
	}
	_, recs := loadDataset(t, out)
	want := map[string]string{"k1": "b1", "k2": "b2", "k3": "c3", "k4": "b4", "{t}x": "b5"}
	if got := asMap(recs); len(recs) != len(want) || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records %+v, want %q", recs, want)
	}

	// The same inputs in the other order: the other values win.
	out2 := filepath.Join(dir, "ds2")
	mustRun(t, "build", "--input", c+","+b+","+a, "--out", out2)
	_, recs = loadDataset(t, out2)
	want = map[string]string{"k1": "a1-again", "k2": "a2", "k3": "a3", "k4": "b4", "{t}x": "a4"}
	if got := asMap(recs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reversed inputs: records %+v, want %q", recs, want)
	}
}

func TestBuildGzipInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	io.WriteString(zw, "key,value\nz,26\ny,25\n")
	zw.Close()
	in := writeInput(t, dir, "in.csv.gz", buf.String())
	out := filepath.Join(dir, "ds")
	mustRun(t, "build", "--input", in, "--out", out)
	if _, recs := loadDataset(t, out); fmt.Sprint(asMap(recs)) != "map[y:25 z:26]" {
		t.Errorf("records %+v", recs)
	}
}

func TestBuildTargetFileSize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	mustRun(t, "gen", "--records", "20000", "--value-size", "200", "--out", in, "--seed", "7")
	out := filepath.Join(dir, "ds")
	const target = 256 << 10
	const blockSize = 16 << 10
	mustRun(t, "build", "--input", in, "--out", out, "--target-file-size", "256KiB", "--block-size", "16KiB")
	m, recs := loadDataset(t, out)
	if len(recs) != 20000 {
		t.Fatalf("%d records, want 20000", len(recs))
	}
	var total int64
	for i, f := range m.Files {
		total += f.Size
		if i < len(m.Files)-1 && (f.Size < target || f.Size > target+blockSize+1024) {
			t.Errorf("%s: %d bytes, want about %d", f.Name, f.Size, target)
		}
	}
	if want := int(total/target) + 1; len(m.Files) != want && len(m.Files) != want-1 {
		t.Errorf("%d files for %d bytes, want about %d", len(m.Files), total, want)
	}
	if len(m.Files) < 10 {
		t.Errorf("only %d files", len(m.Files))
	}
	mustRun(t, "verify", "--dir", out)
}

// TestEndToEnd builds and verifies a 200k-record dataset made by gen.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	mustRun(t, "gen", "--records", "200000", "--value-size", "32", "--key-prefix", "p", "--out", in)
	out := filepath.Join(dir, "ds")
	stdout := mustRun(t, "build", "--input", in, "--out", out, "--target-file-size", "1MiB")
	if !strings.Contains(stdout, "records:    200000 written") {
		t.Errorf("summary:\n%s", stdout)
	}
	m, recs := loadDataset(t, out)
	if len(recs) != 200000 || len(m.Files) < 5 {
		t.Fatalf("%d records in %d files", len(recs), len(m.Files))
	}
	stdout = mustRun(t, "verify", "--dir", out)
	if !strings.Contains(stdout, fmt.Sprintf("is valid: %d files, 200000 records", len(m.Files))) {
		t.Errorf("verify output:\n%s", stdout)
	}
}

func TestVerifyDetectsProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	mustRun(t, "gen", "--records", "3000", "--value-size", "100", "--out", in)
	src := filepath.Join(dir, "ds")
	mustRun(t, "build", "--input", in, "--out", src, "--target-file-size", "64KiB", "--block-size", "4KiB")

	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"flipped byte", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "part-00001.skv")
			b, _ := os.ReadFile(p)
			b[5000] ^= 0x20
			os.WriteFile(p, b, 0o644)
		}, "FAIL part-00001.skv: sha256"},
		{"flipped byte with matching manifest", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "part-00002.skv")
			b, _ := os.ReadFile(p)
			b[5000] ^= 0x20
			os.WriteFile(p, b, 0o644)
			sum := sha256.Sum256(b)
			rewriteManifest(t, dir, func(m *dataset.Manifest) { m.Files[2].SHA256 = hex.EncodeToString(sum[:]) })
		}, "FAIL part-00002.skv: dataset: checksum mismatch: block 1"},
		{"truncated", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "part-00000.skv")
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()-10)
		}, "FAIL part-00000.skv: size"},
		{"missing file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "part-00001.skv"))
		}, "FAIL part-00001.skv: open"},
		{"wrong key count", func(t *testing.T, dir string) {
			rewriteManifest(t, dir, func(m *dataset.Manifest) { m.Files[0].Keys++; m.Records++ })
		}, "FAIL part-00000.skv: dataset: corrupt data file: 558 keys, the manifest says 559"},
		{"bad manifest", func(t *testing.T, dir string) {
			rewriteManifest(t, dir, func(m *dataset.Manifest) { m.Files[0].Name = "../evil" })
		}, `files[0].name: "../evil" would leave the download directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ds := filepath.Join(t.TempDir(), "ds")
			copyDir(t, src, ds)
			tt.damage(t, ds)
			code, stdout, stderr := run(t, "verify", "--dir", ds)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
			}
			if !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("output does not contain %q:\n%s%s", tt.want, stdout, stderr)
			}
		})
	}
}

func rewriteManifest(t *testing.T, dir string, f func(*dataset.Manifest)) {
	t.Helper()
	p := filepath.Join(dir, dataset.ManifestName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dataset.ParseManifest(bytes.NewReader(b), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	f(m)
	if b, err = m.Marshal(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}

func TestGenDeterministic(t *testing.T) {
	t.Parallel()
	gen := func(args ...string) []byte {
		var out bytes.Buffer
		var errb bytes.Buffer
		if code := Main(context.Background(), append([]string{"gen", "--out", "-"}, args...), &out, &errb); code != 0 {
			t.Fatalf("gen %v: exit %d: %s", args, code, errb.String())
		}
		return out.Bytes()
	}
	a := gen("--records", "1000", "--value-size", "37", "--seed", "5", "--key-prefix", "p")
	b := gen("--records", "1000", "--value-size", "37", "--seed", "5", "--key-prefix", "p")
	c := gen("--records", "1000", "--value-size", "37", "--seed", "6", "--key-prefix", "p")
	if !bytes.Equal(a, b) {
		t.Error("same seed, different output")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds, same output")
	}
	lines := strings.Split(strings.TrimSuffix(string(a), "\n"), "\n")
	if len(lines) != 1000 {
		t.Fatalf("%d lines, want 1000", len(lines))
	}
	var p lineParser
	for i, l := range lines {
		k, v, err := p.parse([]byte(l))
		if err != nil {
			t.Fatalf("line %d %q: %v", i+1, l, err)
		}
		if want := fmt.Sprintf("p:%08d", i+1); string(k) != want || len(v) != 37 {
			t.Fatalf("line %d: key %q value %q, want key %q and 37 bytes", i+1, k, v, want)
		}
	}
	// Files and stdout agree.
	f := filepath.Join(t.TempDir(), "g.jsonl")
	mustRun(t, "gen", "--records", "1000", "--value-size", "37", "--seed", "5", "--key-prefix", "p", "--out", f)
	if got, _ := os.ReadFile(f); !bytes.Equal(got, a) {
		t.Error("gen --out FILE differs from --out -")
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
	}{
		{"1000000", 1000000}, {"64MiB", 64 << 20}, {"1GiB", 1 << 30}, {"64KiB", 64 << 10},
		{"1gb", 1e9}, {"5 MB", 5e6}, {"2k", 2048}, {"7b", 7}, {"1TiB", 1 << 40},
		{"", -1}, {"0", -1}, {"-5", -1}, {"1.5GiB", -1}, {"12XB", -1}, {"MiB", -1}, {"99999999999TiB", -1},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSize(tt.in)
			if tt.want < 0 {
				if err == nil {
					t.Errorf("ParseSize(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeInput(t, dir, "in.jsonl", `{"key":"a","value":"b"}`+"\n")
	txt := writeInput(t, dir, "in.txt", "a,b\n")
	empty := writeInput(t, dir, "empty.jsonl", "\n\n")
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	writeInput(t, full, "x", "")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no args", nil, 2, "Usage:"},
		{"help", []string{"help"}, 0, "LAST occurrence in input order wins"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"build without input", []string{"build", "--out", dir}, 2, "--input and --out are required"},
		{"bad flag", []string{"build", "--nope"}, 2, "flag provided but not defined"},
		{"bad size", []string{"build", "--input", in, "--out", "x", "--target-file-size", "lots"}, 2, `invalid size "lots"`},
		{"unknown extension", []string{"build", "--input", txt, "--out", filepath.Join(dir, "o1")}, 1, "use --format"},
		{"bad format", []string{"build", "--input", in, "--format", "xml", "--out", filepath.Join(dir, "o2")}, 1, `unknown --format "xml"`},
		{"missing input", []string{"build", "--input", filepath.Join(dir, "nope.jsonl"), "--out", filepath.Join(dir, "o3")}, 1, "no such file"},
		{"no records", []string{"build", "--input", empty, "--out", filepath.Join(dir, "o4")}, 1, "the input holds no records"},
		{"non-empty out", []string{"build", "--input", in, "--out", full}, 1, "is not empty"},
		{"verify missing dir", []string{"verify", "--dir", filepath.Join(dir, "none")}, 1, "no such file"},
		{"gen without records", []string{"gen", "--out", "-"}, 2, "--records > 0"},
		{"extra argument", []string{"verify", "--dir", dir, "extra"}, 2, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := run(t, tt.args...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, tt.code, tt.want, stdout, stderr)
			}
		})
	}
}
