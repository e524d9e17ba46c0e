package tool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/slotkv/slotkv/pkg/dataset"
)

// FileResult is the outcome of verifying one data file.
type FileResult struct {
	File dataset.File
	Err  error // nil when the file is good; the message starts with the file name
}

// Verify checks the dataset in dir: it parses the manifest and verifies
// every data file (size, SHA-256, then dataset.VerifyFile), calling report
// after each. It returns the manifest, or an error when the manifest itself
// cannot be read.
func Verify(ctx context.Context, dir string, report func(FileResult)) (*dataset.Manifest, error) {
	mf, err := os.Open(filepath.Join(dir, dataset.ManifestName))
	if err != nil {
		return nil, err
	}
	m, err := dataset.ParseManifest(mf, dataset.Limits{})
	mf.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, dataset.ManifestName), err)
	}
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return m, err
		}
		err := verifyFile(filepath.Join(dir, f.Name), f)
		if err != nil && !strings.HasPrefix(err.Error(), f.Name+": ") {
			err = fmt.Errorf("%s: %w", f.Name, err)
		}
		report(FileResult{File: f, Err: err})
	}
	return m, nil
}

func verifyFile(path string, f dataset.File) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	if st.Size() != f.Size {
		return fmt.Errorf("size %d bytes, the manifest says %d", st.Size(), f.Size)
	}
	h := sha256.New()
	verr := dataset.VerifyFile(io.TeeReader(fh, h), f)
	if verr == nil || fullyRead(fh, h, f.Size) {
		if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 {
			return fmt.Errorf("sha256 %s, the manifest says %s", sum, f.SHA256)
		}
	}
	return verr
}

// fullyRead finishes hashing the file after VerifyFile stopped early, so a
// checksum mismatch is reported as such; it reports whether it could.
func fullyRead(fh *os.File, h io.Writer, size int64) bool {
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return false
	}
	if hh, ok := h.(interface{ Reset() }); ok {
		hh.Reset()
	}
	n, err := io.Copy(h, fh)
	return err == nil && n == size
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("verify", stderr)
	dir := fs.String("dir", "", "dataset directory")
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "slotkv-dataset verify: --dir is required")
		fs.Usage()
		return 2
	}
	failed := 0
	var bytes int64
	m, err := Verify(ctx, *dir, func(r FileResult) {
		if r.Err != nil {
			failed++
			fmt.Fprintf(stdout, "FAIL %v\n", r.Err)
			return
		}
		bytes += r.File.Size
		fmt.Fprintf(stdout, "ok   %s: %d keys, slots %s, %d bytes\n", r.File.Name, r.File.Keys, r.File.Slots, r.File.Size)
	})
	if err != nil {
		fmt.Fprintf(stderr, "slotkv-dataset verify: %v\n", err)
		return 1
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "slotkv-dataset verify: %s: %d of %d files failed\n", *dir, failed, len(m.Files))
		return 1
	}
	fmt.Fprintf(stdout, "dataset %s is valid: %d files, %d records, %d bytes (%s)\n", *dir, len(m.Files), m.Records, bytes, humanBytes(bytes))
	return 0
}
