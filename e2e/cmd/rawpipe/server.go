package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/pkg/slot"
)

// maxMsg bounds one frame; batches stay near batchBytes.
const maxMsg = 64 << 20

// serve is the body of `source` and `dest`: open the database, listen,
// announce the address, serve until SIGTERM or SIGINT, close the database.
func serve(name string, args []string, desc *grpc.ServiceDesc) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	dir := fs.String("dir", "", "Badger directory (required)")
	addr := fs.String("addr", "127.0.0.1:0", "gRPC listen address")
	listenFile := fs.String("listen-file", "", `write {"grpc":ADDR} here once listening`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	db, err := openDB(*dir)
	if err != nil {
		return err
	}
	defer db.Close()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := newServer(desc, db)
	fmt.Printf("listening on %s\n", lis.Addr())
	if *listenFile != "" {
		if err := writeListenFile(*listenFile, lis.Addr().String()); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		stopGracefully(srv)
	}()
	if err := srv.Serve(lis); err != nil {
		return fmt.Errorf("serve on %s: %w", lis.Addr(), err)
	}
	return nil
}

func newServer(desc *grpc.ServiceDesc, db *badger.DB) *grpc.Server {
	srv := grpc.NewServer(grpc.ForceServerCodec(codec{}), grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg))
	srv.RegisterService(desc, db)
	return srv
}

// stopGracefully lets running streams finish for a few seconds, then cuts
// them, so the database closes cleanly either way.
func stopGracefully(srv *grpc.Server) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
}

// The two services, registered with the *badger.DB they serve as the
// implementation.
var (
	sourceDesc = grpc.ServiceDesc{
		ServiceName: "rawpipe.Source",
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{{StreamName: "Scan", ServerStreams: true, Handler: scan}},
	}
	destDesc = grpc.ServiceDesc{
		ServiceName: "rawpipe.Dest",
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{{StreamName: "Write", ServerStreams: true, ClientStreams: true, Handler: write}},
	}
)

func runSource(args []string) error { return serve("source", args, &sourceDesc) }

func runDest(args []string) error { return serve("dest", args, &destDesc) }

// A scan request is uvarint n, then n slot ranges of two big-endian uint16
// (first and last slot).
func scanRequest(rs slot.RangeSet) []byte {
	out := binary.AppendUvarint(nil, uint64(len(rs.Ranges())))
	for _, r := range rs.Ranges() {
		out = binary.BigEndian.AppendUint16(out, r.Start)
		out = binary.BigEndian.AppendUint16(out, r.End)
	}
	return out
}

func parseScanRequest(p []byte) ([]slot.Range, error) {
	n, k := binary.Uvarint(p)
	if k <= 0 || uint64(len(p)-k) != 4*n {
		return nil, errors.New("scan request: bad length")
	}
	out := make([]slot.Range, n)
	for i := range out {
		q := p[k+4*i:]
		out[i] = slot.Range{Start: binary.BigEndian.Uint16(q), End: binary.BigEndian.Uint16(q[2:])}
		if err := out[i].Validate(); err != nil {
			return nil, fmt.Errorf("scan request: %w", err)
		}
	}
	return out, nil
}

// scan streams every record of the requested slot ranges from one
// read-only transaction, in batches.
func scan(srv any, stream grpc.ServerStream) error {
	db := srv.(*badger.DB)
	var req frame
	if err := stream.RecvMsg(&req); err != nil {
		return fmt.Errorf("receive scan request: %w", err)
	}
	ranges, err := parseScanRequest(req.b)
	if err != nil {
		return err
	}
	return db.View(func(txn *badger.Txn) error {
		// Values live in the LSM tree: prefetching them (a goroutine per
		// item in Badger) only costs.
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		b := &batch{buf: make([]byte, 0, batchBytes+64<<10)}
		send := func() error {
			if b.records == 0 {
				return nil
			}
			// bytes copies, so b.buf is free again once it returns.
			if err := stream.SendMsg(&frame{b: b.bytes()}); err != nil {
				return fmt.Errorf("send batch: %w", err)
			}
			b.buf, b.records, b.kvBytes = b.buf[:0], 0, 0
			return nil
		}
		for _, r := range ranges {
			lo, hi := r.KeyBounds()
			for it.Seek(lo[:]); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				if bytes.Compare(k, hi[:]) >= 0 {
					break
				}
				if err := item.Value(func(v []byte) error { b.add(k, v); return nil }); err != nil {
					return fmt.Errorf("read value of %q: %w", k, err)
				}
				if b.full() {
					if err := send(); err != nil {
						return err
					}
				}
			}
		}
		return send()
	})
}

// write applies each received batch with a WriteBatch and acknowledges it
// (uvarint record count) once flushed. The next batch is received while
// one is written, so network and disk overlap.
func write(srv any, stream grpc.ServerStream) error {
	db := srv.(*badger.DB)
	type recvd struct {
		f   *frame
		err error
	}
	in := make(chan recvd, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			f := &frame{}
			err := stream.RecvMsg(f)
			select {
			case in <- recvd{f, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for r := range in {
		if errors.Is(r.err, io.EOF) {
			return nil
		}
		if r.err != nil {
			return fmt.Errorf("receive batch: %w", r.err)
		}
		n, err := apply(db, r.f.b)
		if err != nil {
			return err
		}
		if err := stream.SendMsg(&frame{b: binary.AppendUvarint(nil, n)}); err != nil {
			return fmt.Errorf("send ack: %w", err)
		}
	}
	return nil
}

// apply writes one batch frame and returns its record count. The records
// point into p, which nobody else holds.
func apply(db *badger.DB, p []byte) (uint64, error) {
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	var n uint64
	err := eachRecord(p, func(k, v []byte) error {
		n++
		return wb.Set(k, v)
	})
	if err != nil {
		return 0, fmt.Errorf("apply batch: %w", err)
	}
	if err := wb.Flush(); err != nil {
		return 0, fmt.Errorf("flush batch of %d records: %w", n, err)
	}
	return n, nil
}
