// Command rawpipe is the baseline of the migration benchmark
// (e2e/bench_migration_test.go): the fastest simple way to copy a slot
// range of one Badger database into another across processes, with none of
// slotkv's protocol, checks or bookkeeping. Three subcommands, each its own
// process so the benchmark can read each one's CPU time:
//
//	rawpipe source --dir D  --addr 127.0.0.1:0 [--listen-file F]
//	rawpipe dest   --dir D2 --addr 127.0.0.1:0 [--listen-file F]
//	rawpipe relay  --source A --dest B --parallelism P --ranges 0-5460
//
// source serves a server stream that iterates one read-only transaction
// over the storage keys of a slot range (the layout slotkv stores: 2-byte
// big-endian slot + user key) and sends batches of about 1000 records or
// 1 MiB. dest serves a bidi stream that writes each batch with a Badger
// WriteBatch and acknowledges it once flushed. relay splits the ranges into
// P sub-ranges and, for each, pipes a source stream into a dest stream; it
// prints one JSON line {"keys":..,"bytes":..,"seconds":..}.
//
// The messages are raw byte frames under a codec of their own (see
// frame.go), so no protobuf encoding is paid either. source and dest print
// "listening on ADDR" on stdout and, with --listen-file, write
// {"grpc":"ADDR"} there the way slotkv services do, so pkg/proctest can
// start them on port 0.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "source":
		err = runSource(args)
	case "dest":
		err = runDest(args)
	case "relay":
		err = runRelay(args, os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rawpipe %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: rawpipe source|dest --dir DIR --addr HOST:PORT [--listen-file FILE]\n       rawpipe relay --source ADDR --dest ADDR --parallelism P --ranges 0-5460")
	os.Exit(2)
}
