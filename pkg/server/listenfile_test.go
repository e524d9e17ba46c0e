package server

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteListenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "listen.json")
	g := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}
	h := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4343}
	for _, tc := range []struct {
		name string
		http net.Addr
		want ListenAddrs
	}{
		{"both", h, ListenAddrs{GRPC: "127.0.0.1:4242", HTTP: "127.0.0.1:4343"}},
		{"grpc only", nil, ListenAddrs{GRPC: "127.0.0.1:4242"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := WriteListenFile(path, g, tc.http); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got ListenAddrs
			if err := json.Unmarshal(b, &got); err != nil || got != tc.want {
				t.Fatalf("file = %s (%v), want %+v", b, err, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
	if err := WriteListenFile(filepath.Join(dir, "missing", "x.json"), g, nil); err == nil {
		t.Fatal("writing into a missing directory must fail")
	}
}
