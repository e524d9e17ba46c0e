package faultproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, msg string) (string, error) {
	t.Helper()
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestForwardAndCount(t *testing.T) {
	t.Parallel()
	p := start(t)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, err := roundTrip(t, c, r, "hello"); err != nil || got != "hello\n" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	// The proxy counts a chunk once its write returned, which can be just
	// after the client already read it: wait for the counters.
	deadline := time.Now().Add(10 * time.Second)
	for p.BytesToClient() != 6 || p.BytesToTarget() != 6 || p.Accepted() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("counters %d %d %d, want 6 6 1", p.BytesToClient(), p.BytesToTarget(), p.Accepted())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStallHoldsAnswersUntilResume(t *testing.T) {
	t.Parallel()
	p := start(t)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	p.Stall()
	got := make(chan string, 1)
	go func() {
		s, _ := roundTrip(t, c, r, "held")
		got <- s
	}()
	// The request reaches the server; its answer must not come back.
	deadline := time.Now().Add(10 * time.Second)
	for p.BytesToTarget() < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	select {
	case s := <-got:
		t.Fatalf("answer %q went through a stall", s)
	default:
	}
	if p.BytesToClient() != 0 {
		t.Fatalf("%d bytes went through a stall", p.BytesToClient())
	}
	p.Resume()
	if s := <-got; s != "held\n" {
		t.Fatalf("after resume: %q", s)
	}
}

func TestCutClosesConnections(t *testing.T) {
	t.Parallel()
	p := start(t)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := roundTrip(t, c, r, "a"); err != nil {
		t.Fatal(err)
	}
	if n := p.Cut(); n != 1 {
		t.Fatalf("cut %d connections, want 1", n)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("read after cut succeeded")
	}
	// New connections still work.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(t, c2, bufio.NewReader(c2), "b"); err != nil || got != "b\n" {
		t.Fatalf("after cut: %q %v", got, err)
	}
}

func TestDelayKeepsOrder(t *testing.T) {
	t.Parallel()
	p := start(t)
	p.SetDelay(5 * time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, m := range []string{"1", "2", "3"} {
		if got, err := roundTrip(t, c, r, m); err != nil || got != m+"\n" {
			t.Fatalf("got %q %v, want %s", got, err, m)
		}
	}
}
