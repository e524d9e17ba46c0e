package server

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// ListenAddrs is the content of a listen file.
type ListenAddrs struct {
	GRPC string `json:"grpc"`
	HTTP string `json:"http"`
	// RESP is the Redis-protocol listener of a service started with
	// --resp-addr, "" otherwise.
	RESP string `json:"resp,omitempty"`
}

// WriteListenFile writes the bound addresses as JSON ({"grpc":..,"http":..})
// to path atomically (temp file in the same directory, then rename), so a
// reader never sees a half-written file. Services write it from
// Options.OnListen when started with --listen-file: whoever started them on
// port 0 (tests, scripts) learns the ports the kernel gave. httpAddr may be
// nil.
func WriteListenFile(path string, grpcAddr, httpAddr net.Addr) error {
	v := ListenAddrs{GRPC: grpcAddr.String()}
	if httpAddr != nil {
		v.HTTP = httpAddr.String()
	}
	return WriteListenAddrs(path, v)
}

// WriteListenAddrs writes v to path as WriteListenFile does.
func WriteListenAddrs(path string, v ListenAddrs) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("listen file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("listen file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("listen file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("listen file %s: %w", path, err)
	}
	return nil
}
