package resp

import (
	"fmt"
	"net"
	"sync/atomic"
)

// Request size guard. redcon buffers a frame until it is complete and
// takes any declared bulk length, so a client could make a connection
// hold gigabytes before a single command runs (Redis bounds this with
// proto-max-bulk-len, and with 16 KiB bulks before AUTH). Every
// connection counts the bytes read since its last command ran; past the
// limit it gets Redis's protocol error and is closed. The limit is small
// until the connection has authenticated (when tokens are set), so an
// unauthenticated client cannot make the server buffer much.

// Default limits on the bytes a connection may send without completing a
// command.
const (
	// DefaultMaxRequestBytes fits the largest key and value several times
	// over (an MSET of a few maximal values); a pipeline of small
	// commands never comes near it, since every command resets the count.
	DefaultMaxRequestBytes = 64 << 20
	// unauthenticatedRequestBytes is the limit before AUTH when tokens are
	// set: enough for AUTH and HELLO, not for data.
	unauthenticatedRequestBytes = 64 << 10
)

// guardListener wraps every accepted connection in a guardConn.
type guardListener struct {
	net.Listener
	authed, open int64 // the limits after and before AUTH
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g := &guardConn{Conn: c, authedLimit: l.authed}
	g.limit.Store(l.open)
	return g, nil
}

// guardConn counts the bytes read since the last command ran.
type guardConn struct {
	net.Conn
	authedLimit int64
	limit       atomic.Int64
	pending     atomic.Int64
}

func (g *guardConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if limit := g.limit.Load(); g.pending.Add(int64(n)) > limit {
		// Answer as Redis does to an oversized bulk, then end the
		// connection: redcon closes it on the read error.
		_, _ = fmt.Fprintf(g.Conn, "-ERR Protocol error: request over %d bytes without a complete command\r\n", limit)
		return 0, fmt.Errorf("resp: request over %d bytes", limit)
	}
	return n, err
}

// commandRan resets the count; once the connection is authenticated it
// gets the full limit.
func (g *guardConn) commandRan(authed bool) {
	g.pending.Store(0)
	if authed {
		g.limit.Store(g.authedLimit)
	}
}
