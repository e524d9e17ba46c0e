package tool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
)

// genAlphabet has 64 printable characters that need no JSON (or CSV)
// escaping.
const genAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// Gen writes records lines of synthetic JSONL to w: keys
// PREFIX:00000001, PREFIX:00000002, ... (at least 8 digits) and values of
// valueSize printable pseudo-random characters. The output depends only on
// the arguments.
func Gen(ctx context.Context, w io.Writer, records int64, valueSize int, seed uint64, prefix string) error {
	if records < 0 || valueSize < 0 {
		return errors.New("--records and --value-size must be >= 0")
	}
	q, err := json.Marshal(prefix + ":")
	if err != nil {
		return err
	}
	head := append([]byte(`{"key":`), q[:len(q)-1]...) // without the closing quote
	rng := rand.New(rand.NewPCG(seed, seed^0x736c6f746b76))
	bw := bufio.NewWriterSize(w, 1<<20)
	line := make([]byte, 0, len(head)+32+valueSize)
	for i := int64(1); i <= records; i++ {
		if i%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line = append(line[:0], head...)
		for d := int64(10000000); d > i && d > 1; d /= 10 {
			line = append(line, '0')
		}
		line = strconv.AppendInt(line, i, 10)
		line = append(line, `","value":"`...)
		for n := valueSize; n > 0; {
			x := rng.Uint64()
			for k := 0; k < 8 && n > 0; k, n = k+1, n-1 {
				line = append(line, genAlphabet[x&63])
				x >>= 8
			}
		}
		line = append(line, "\"}\n"...)
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("gen", stderr)
	records := fs.Int64("records", 0, "number of records")
	valueSize := fs.Int("value-size", 100, "value size in bytes")
	out := fs.String("out", "", "output file (- for standard output)")
	seed := fs.Uint64("seed", 1, "random seed")
	prefix := fs.String("key-prefix", "key", "key prefix: keys are PREFIX:00000001, ...")
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *out == "" || *records <= 0 || *valueSize < 0 {
		fmt.Fprintln(stderr, "slotkv-dataset gen: --out and --records > 0 are required, --value-size must be >= 0")
		fs.Usage()
		return 2
	}
	if *out == "-" {
		if err := Gen(ctx, stdout, *records, *valueSize, *seed, *prefix); err != nil {
			fmt.Fprintf(stderr, "slotkv-dataset gen: %v\n", err)
			return 1
		}
		return 0
	}
	f, err := os.Create(*out)
	if err == nil {
		err = Gen(ctx, f, *records, *valueSize, *seed, *prefix)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(*out)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "slotkv-dataset gen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %d records to %s\n", *records, *out)
	return 0
}
