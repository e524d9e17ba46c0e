package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/slotkv/slotkv/pkg/slot"
)

// relayResult is the line relay prints.
type relayResult struct {
	Keys    uint64  `json:"keys"`
	Bytes   uint64  `json:"bytes"` // storage key + value bytes
	Seconds float64 `json:"seconds"`
	Streams int     `json:"streams"`
}

func runRelay(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	src := fs.String("source", "", "address of `rawpipe source` (required)")
	dst := fs.String("dest", "", "address of `rawpipe dest` (required)")
	par := fs.Int("parallelism", 1, "streams, each over its own sub-range")
	rangesFlag := fs.String("ranges", "", "slot ranges to copy, e.g. 0-5460 (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *src == "" || *dst == "" || *rangesFlag == "" {
		return errors.New("--source, --dest and --ranges are required")
	}
	ranges, err := slot.ParseRangeSet(*rangesFlag)
	if err != nil {
		return fmt.Errorf("--ranges: %w", err)
	}
	srcConn, err := dial(*src)
	if err != nil {
		return err
	}
	defer srcConn.Close()
	dstConn, err := dial(*dst)
	if err != nil {
		return err
	}
	defer dstConn.Close()

	start := time.Now()
	res, err := copyAll(context.Background(), srcConn, dstConn, ranges.Split(*par))
	if err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	return json.NewEncoder(out).Encode(res)
}

func dial(addr string) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{}), grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return cc, nil
}

// copyAll runs one pipe per piece at once; the first error cancels the
// others.
func copyAll(ctx context.Context, src, dst *grpc.ClientConn, pieces []slot.RangeSet) (relayResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		keys, bytes atomic.Uint64
		wg          sync.WaitGroup
		once        sync.Once
		firstErr    error
	)
	for _, p := range pieces {
		wg.Go(func() {
			k, b, err := pipe(ctx, src, dst, p)
			keys.Add(k)
			bytes.Add(b)
			if err != nil {
				once.Do(func() { firstErr = fmt.Errorf("ranges %s: %w", p, err); cancel() })
			}
		})
	}
	wg.Wait()
	return relayResult{Keys: keys.Load(), Bytes: bytes.Load(), Streams: len(pieces)}, firstErr
}

// pipe copies the records of rs from a source stream into a dest stream
// and returns once the dest has acknowledged every batch.
func pipe(ctx context.Context, src, dst *grpc.ClientConn, rs slot.RangeSet) (keys, bytes uint64, err error) {
	in, err := src.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, scanMethod)
	if err != nil {
		return 0, 0, fmt.Errorf("open scan: %w", err)
	}
	if err := in.SendMsg(&frame{b: scanRequest(rs)}); err != nil {
		return 0, 0, fmt.Errorf("send scan request: %w", err)
	}
	if err := in.CloseSend(); err != nil {
		return 0, 0, fmt.Errorf("close scan request: %w", err)
	}
	out, err := dst.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, writeMethod)
	if err != nil {
		return 0, 0, fmt.Errorf("open write: %w", err)
	}
	acks := make(chan error, 1)
	var acked atomic.Uint64
	go func() { acks <- readAcks(out, &acked) }()
	var sent uint64
	for {
		f := &frame{} // a new one each time: a sent frame is gRPC's until written
		if err := in.RecvMsg(f); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return keys, bytes, fmt.Errorf("receive from source: %w", err)
		}
		n, b, _, err := header(f.b)
		if err != nil {
			return keys, bytes, err
		}
		if err := out.SendMsg(f); err != nil {
			// The real cause comes with the stream's status.
			return keys, bytes, fmt.Errorf("send to dest: %w", errors.Join(err, <-acks))
		}
		keys, bytes, sent = keys+n, bytes+b, sent+n
	}
	if err := out.CloseSend(); err != nil {
		return keys, bytes, fmt.Errorf("close write: %w", err)
	}
	if err := <-acks; err != nil {
		return keys, bytes, err
	}
	if got := acked.Load(); got != sent {
		return keys, bytes, fmt.Errorf("dest acknowledged %d of %d records", got, sent)
	}
	return keys, bytes, nil
}

// readAcks counts acknowledged records until the dest ends the stream.
func readAcks(out grpc.ClientStream, acked *atomic.Uint64) error {
	for {
		var f frame
		if err := out.RecvMsg(&f); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("dest: %w", err)
		}
		n, k := binary.Uvarint(f.b)
		if k <= 0 {
			return errors.New("dest: bad acknowledgement")
		}
		acked.Add(n)
	}
}
