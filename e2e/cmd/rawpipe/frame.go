package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
)

// frame is every message of rawpipe's streams: bytes as they go on the
// wire, no encoding.
type frame struct{ b []byte }

// codec moves frames as they are. Marshal hands gRPC the frame's own bytes
// (no copy: the sender never touches a frame after sending it); Unmarshal
// copies, since gRPC reuses its buffer after the call.
type codec struct{}

func (codec) Name() string { return "rawpipe" }

func (codec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("rawpipe codec: cannot marshal %T", v)
	}
	return f.b, nil
}

func (codec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("rawpipe codec: cannot unmarshal into %T", v)
	}
	f.b = append(make([]byte, 0, len(data)), data...)
	return nil
}

// Full method names of the two streams.
const (
	scanMethod  = "/rawpipe.Source/Scan"
	writeMethod = "/rawpipe.Dest/Write"
)

// Batch limits of the source: what slotkv's migration batches default to.
const (
	batchRecords = 1000
	batchBytes   = 1 << 20
)

// A batch frame is
//
//	uvarint records, uvarint key+value bytes, then per record
//	uvarint len(key), key, uvarint len(value), value
//
// with storage keys (slot prefix included). The two counts up front let
// the relay count what it moves without decoding the records.
type batch struct {
	buf     []byte
	records int
	kvBytes int
}

// add appends one record; the header is written by bytes.
func (b *batch) add(k, v []byte) {
	b.buf = binary.AppendUvarint(b.buf, uint64(len(k)))
	b.buf = append(b.buf, k...)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(v)))
	b.buf = append(b.buf, v...)
	b.records++
	b.kvBytes += len(k) + len(v)
}

func (b *batch) full() bool { return b.records >= batchRecords || len(b.buf) >= batchBytes }

// bytes returns the frame: header, then the records.
func (b *batch) bytes() []byte {
	out := binary.AppendUvarint(make([]byte, 0, len(b.buf)+2*binary.MaxVarintLen64), uint64(b.records))
	out = binary.AppendUvarint(out, uint64(b.kvBytes))
	return append(out, b.buf...)
}

// header reads a batch frame's record and byte counts and returns the rest.
func header(p []byte) (records, kvBytes uint64, rest []byte, err error) {
	records, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, 0, nil, errors.New("batch frame: bad record count")
	}
	kvBytes, m := binary.Uvarint(p[n:])
	if m <= 0 {
		return 0, 0, nil, errors.New("batch frame: bad byte count")
	}
	return records, kvBytes, p[n+m:], nil
}

// eachRecord calls fn for every record of a batch frame; the slices point
// into p.
func eachRecord(p []byte, fn func(k, v []byte) error) error {
	n, _, rest, err := header(p)
	if err != nil {
		return err
	}
	for i := range n {
		k, r, err := field(rest)
		if err != nil {
			return fmt.Errorf("record %d key: %w", i, err)
		}
		v, r, err := field(r)
		if err != nil {
			return fmt.Errorf("record %d value: %w", i, err)
		}
		if err := fn(k, v); err != nil {
			return err
		}
		rest = r
	}
	return nil
}

func field(p []byte) (f, rest []byte, err error) {
	l, n := binary.Uvarint(p)
	if n <= 0 || uint64(len(p)-n) < l {
		return nil, nil, errors.New("truncated")
	}
	return p[n : n+int(l)], p[n+int(l):], nil
}

// openDB opens a Badger database with the options slotkv's storage node
// uses (pkg services/storage/internal/store), so both sides of the
// comparison store the same way.
func openDB(dir string) (*badger.DB, error) {
	o := badger.DefaultOptions(dir).
		WithLogger(nil).
		WithMetricsEnabled(false).
		WithMemTableSize(64 << 20).
		WithBlockCacheSize(256 << 20).
		WithValueLogFileSize(256 << 20).
		// store.DefaultValueThreshold: values from 256 bytes in the value log.
		WithValueThreshold(256)
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("open badger in %s: %w", dir, err)
	}
	return db, nil
}

// writeListenFile writes {"grpc":addr} to path atomically, as slotkv
// services do, for pkg/proctest.
func writeListenFile(path, addr string) error {
	b, err := json.Marshal(map[string]string{"grpc": addr})
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("listen file %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("listen file %s: %w", path, err)
	}
	return nil
}
