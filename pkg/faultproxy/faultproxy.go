// Package faultproxy is a TCP proxy for fault-injection tests: put it
// between a client and a real server on loopback, then slow the server's
// answers down, stall them, or cut every connection, while counting the
// bytes that went through. It stands in for a slow disk, a congested link or
// a dying node without touching the server.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections from its own loopback address to a target.
type Proxy struct {
	ln     net.Listener
	target string

	delay   atomic.Int64 // nanoseconds added before each chunk from the target
	stalled atomic.Bool  // hold every chunk from the target until resumed
	resume  chan struct{}

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	toClient atomic.Int64 // bytes forwarded target -> client
	toTarget atomic.Int64 // bytes forwarded client -> target
	accepted atomic.Int64
}

// New starts a proxy on 127.0.0.1:0 forwarding to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, resume: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address clients dial instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay delays every chunk of bytes from the target by d (0 removes the
// delay). Order is kept: a connection's answers arrive late, never shuffled.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Stall holds every byte from the target until Resume: the server looks
// alive (connections stay open) but never answers.
func (p *Proxy) Stall() { p.stalled.Store(true) }

// Resume ends a Stall.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled.Swap(false) {
		close(p.resume)
		p.resume = make(chan struct{})
	}
}

// Cut closes every open connection at once, as a crash or a network cut
// does; new connections are still accepted.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		c.Close()
		n++
	}
	return n / 2 // two sockets per proxied connection
}

// BytesToClient is the number of bytes forwarded from the target so far.
func (p *Proxy) BytesToClient() int64 { return p.toClient.Load() }

// BytesToTarget is the number of bytes forwarded to the target so far.
func (p *Proxy) BytesToTarget() int64 { return p.toTarget.Load() }

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Close stops accepting, cuts every connection and waits for the
// forwarding goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.Resume()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		t, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, t) {
			c.Close()
			t.Close()
			return
		}
		p.wg.Add(2)
		go p.pipe(t, c, &p.toTarget, false)
		go p.pipe(c, t, &p.toClient, true)
	}
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

// pipe copies src to dst; faults apply to the direction from the target.
func (p *Proxy) pipe(dst, src net.Conn, count *atomic.Int64, fromTarget bool) {
	defer p.wg.Done()
	defer p.untrack(dst, src)
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 && fromTarget {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			for p.stalled.Load() {
				p.mu.Lock()
				ch := p.resume
				p.mu.Unlock()
				if !p.stalled.Load() {
					break
				}
				<-ch
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			count.Add(int64(n))
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}
