package dataset

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// Throughput of the Writer and Reader in MB/s of data file, for small and
// larger values (about 8 MiB of file per operation).
var benchCases = []struct {
	valueSize int
	records   int
}{
	{100, 70000},
	{1000, 8000},
}

func benchRecords(n, valueSize int) []Record {
	recs := makeRecords(n, 0, 42)
	val := bytes.Repeat([]byte("0123456789abcdef"), valueSize/16+1)[:valueSize]
	for i := range recs {
		recs[i].Value = val
	}
	return recs
}

func BenchmarkWriter(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(fmt.Sprintf("value=%d", bc.valueSize), func(b *testing.B) {
			recs := benchRecords(bc.records, bc.valueSize)
			var buf bytes.Buffer
			data, _ := writeFile(b, recs, 0)
			buf.Grow(len(data))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				w := NewWriter(&buf, WriterOptions{})
				for _, r := range recs {
					if err := w.Write(r); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReader(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(fmt.Sprintf("value=%d", bc.valueSize), func(b *testing.B) {
			data, _ := writeFile(b, benchRecords(bc.records, bc.valueSize), 0)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := NewReader(bytes.NewReader(data))
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := r.Next(); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
			}
		})
	}
}
