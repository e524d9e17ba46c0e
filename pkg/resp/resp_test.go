package resp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/redcon"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// mapBackend is a map-backed Backend for the protocol-shape tests of this
// package (the commands against real routers and nodes are tested in the
// router, the storage node and e2e with go-redis). It implements just the
// Update operations these tests use.
type mapBackend struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (b *mapBackend) Get(_ context.Context, key []byte) (Value, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[string(key)]
	return Value{Data: v, Found: ok}, nil
}

func (b *mapBackend) Set(_ context.Context, key, value []byte, _ int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[string(key)] = bytes.Clone(value)
	return nil
}

func (b *mapBackend) Update(_ context.Context, req *storagev1.UpdateRequest) (*storagev1.UpdateResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old, found := b.m[string(req.Key)]
	out := &storagev1.UpdateResponse{OldFound: found, OldValue: old}
	switch req.Op {
	case storagev1.UpdateOp_UPDATE_OP_SET:
		if (req.Condition == storagev1.WriteCondition_WRITE_CONDITION_IF_ABSENT && found) ||
			(req.Condition == storagev1.WriteCondition_WRITE_CONDITION_IF_PRESENT && !found) {
			return out, nil
		}
		b.m[string(req.Key)] = bytes.Clone(req.Value)
		out.Applied = true
	case storagev1.UpdateOp_UPDATE_OP_INCR_BY:
		n := int64(0)
		if found {
			var ok bool
			if n, ok = parseInt(old); !ok {
				return nil, rpcerr.ToStatus(rpcerr.ErrNotInteger)
			}
		}
		if (req.Delta > 0 && n > math.MaxInt64-req.Delta) || (req.Delta < 0 && n < math.MinInt64-req.Delta) {
			return nil, rpcerr.ToStatus(rpcerr.ErrOverflow)
		}
		n += req.Delta
		b.m[string(req.Key)] = []byte(itoa(n))
		out.Applied, out.NewInt = true, n
	default:
		return nil, status.Error(codes.Unimplemented, "not in the test backend")
	}
	return out, nil
}

func (b *mapBackend) MGet(ctx context.Context, keys [][]byte) ([]Value, error) {
	out := make([]Value, len(keys))
	for i, k := range keys {
		out[i], _ = b.Get(ctx, k)
	}
	return out, nil
}

func (b *mapBackend) MSet(ctx context.Context, ps []Pair, _ bool) (bool, error) {
	for _, p := range ps {
		_ = b.Set(ctx, p.Key, p.Value, 0)
	}
	return true, nil
}

func (b *mapBackend) Del(_ context.Context, keys [][]byte) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, k := range keys {
		if _, ok := b.m[string(k)]; ok {
			n++
			delete(b.m, string(k))
		}
	}
	return n, nil
}

// Scan pages through the sorted keys; the cursor is the next key.
func (b *mapBackend) Scan(_ context.Context, cursor, prefix []byte, count int) ([][]byte, []byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var keys []string
	for k := range b.m {
		if strings.HasPrefix(k, string(prefix)) && k >= string(cursor) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var next []byte
	if len(keys) > count {
		next = []byte(keys[count])
		keys = keys[:count]
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out, next, nil
}

func (b *mapBackend) DBSize(context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.m)), nil
}

func (b *mapBackend) FlushAll(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.m)
	return nil
}

// oneSlotCluster serves slot 0-8191 here and sends the rest to another
// node, with slot 100 frozen.
type oneSlotCluster struct{}

func (oneSlotCluster) Route(s uint16) error {
	switch {
	case s == 100:
		return Error("TRYAGAIN slot 100 is frozen for a hand-off")
	case s >= 8192:
		return &MovedError{Slot: s, Addr: "127.0.0.1:7302"}
	}
	return nil
}

func (oneSlotCluster) State() ClusterState {
	return ClusterState{Version: 3, Self: "n1", Nodes: []ClusterNode{
		{ID: "n1", Addr: "127.0.0.1:7301", Ranges: []slot.Range{{Start: 0, End: 8191}}},
		{ID: "n2", Addr: "127.0.0.1:7302", Ranges: []slot.Range{{Start: 8192, End: 16383}}},
	}}
}

// start serves o on 127.0.0.1:0 until the test ends.
func start(t *testing.T, o Options) string {
	t.Helper()
	if o.Backend == nil {
		o.Backend = &mapBackend{m: map[string][]byte{}}
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// client is a raw RESP connection: the tests write frames and read whole
// replies as bytes, so reply shapes are checked exactly.
type client struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
	b  []byte
}

func dialRaw(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &client{t: t, c: c, rd: newReader(c)}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// cmd sends a command as a RESP array of bulk strings.
func cmdFrame(args ...string) []byte {
	var b []byte
	b = redcon.AppendArray(b, len(args))
	for _, a := range args {
		b = redcon.AppendBulkString(b, a)
	}
	return b
}

func (c *client) send(raw []byte) {
	c.t.Helper()
	if _, err := c.c.Write(raw); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one whole reply (RESP2 or RESP3) and returns its bytes.
func (c *client) reply() string {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if n := replyLen(c.b); n > 0 {
			r := string(c.b[:n])
			c.b = c.b[n:]
			return r
		}
		buf := make([]byte, 4096)
		n, err := c.rd.Read(buf)
		if err != nil {
			c.t.Fatalf("reading a reply (have %q): %v", c.b, err)
		}
		c.b = append(c.b, buf[:n]...)
	}
}

// replyLen is the length of the first complete reply in b, 0 if none.
func replyLen(b []byte) int {
	line := bytes.Index(b, []byte("\r\n"))
	if line < 0 {
		return 0
	}
	head := string(b[1:line])
	n := line + 2
	count := func() int {
		var k int
		for _, r := range head {
			if r == '-' {
				return -1
			}
			k = k*10 + int(r-'0')
		}
		return k
	}
	switch b[0] {
	case '+', '-', ':', '_', ',', '#':
		return n
	case '$', '=':
		k := count()
		if k < 0 {
			return n
		}
		if len(b) < n+k+2 {
			return 0
		}
		return n + k + 2
	case '*', '~', '%':
		k := count()
		if b[0] == '%' {
			k *= 2
		}
		for range k {
			m := replyLen(b[n:])
			if m == 0 {
				return 0
			}
			n += m
		}
		return n
	}
	return 0
}

func (c *client) do(args ...string) string {
	c.t.Helper()
	c.send(cmdFrame(args...))
	return c.reply()
}

// closed reports whether the server closed the connection.
func (c *client) closed() bool {
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.rd.ReadByte()
	return errors.Is(err, io.EOF)
}

func TestCommands(t *testing.T) {
	t.Parallel()
	addr := start(t, Options{Limits: limits.KV{MaxKeyBytes: 16, MaxValueBytes: 32}})
	c := dialRaw(t, addr)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "+PONG\r\n"},
		{[]string{"ping", "hi"}, "$2\r\nhi\r\n"},
		{[]string{"ECHO", "x"}, "$1\r\nx\r\n"},
		{[]string{"GET"}, "-ERR wrong number of arguments for 'get' command\r\n"},
		{[]string{"SET", "k"}, "-ERR wrong number of arguments for 'set' command\r\n"},
		{[]string{"NOSUCH", "a", "b"}, "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n"},
		{[]string{"GET", "k"}, "$-1\r\n"},
		{[]string{"SET", "k", "v"}, "+OK\r\n"},
		{[]string{"GET", "k"}, "$1\r\nv\r\n"},
		{[]string{"SET", "k", "w", "NX"}, "$-1\r\n"},
		{[]string{"SET", "k", "w", "XX", "GET"}, "$1\r\nv\r\n"},
		{[]string{"SET", "k", "w", "NX", "XX"}, "-ERR syntax error\r\n"},
		{[]string{"SET", "k", "w", "EX", "0"}, "-ERR invalid expire time in 'set' command\r\n"},
		{[]string{"SET", "k", "w", "EX", "x"}, "-ERR value is not an integer or out of range\r\n"},
		{[]string{"SET", "k", "w", "EX"}, "-ERR syntax error\r\n"},
		{[]string{"SETNX", "k", "z"}, ":0\r\n"},
		{[]string{"INCR", "n"}, ":1\r\n"},
		{[]string{"INCRBY", "n", "41"}, ":42\r\n"},
		{[]string{"DECRBY", "n", "2"}, ":40\r\n"},
		{[]string{"INCRBY", "n", "x"}, "-ERR value is not an integer or out of range\r\n"},
		{[]string{"INCR", "k"}, "-ERR value is not an integer or out of range\r\n"},
		{[]string{"DECRBY", "n", "-9223372036854775808"}, "-ERR decrement would overflow\r\n"},
		{[]string{"MSET", "a", "1", "b"}, "-ERR wrong number of arguments for 'mset' command\r\n"},
		{[]string{"MSET", "a", "1", "b", "2"}, "+OK\r\n"},
		{[]string{"MGET", "a", "nope", "b"}, "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"},
		{[]string{"EXISTS", "a", "a", "nope"}, ":2\r\n"},
		{[]string{"MSETNX", "a", "1", "b", "2"}, "-CROSSSLOT Keys in request don't hash to the same slot\r\n"},
		{[]string{"DEL", "a", "b", "nope"}, ":2\r\n"},
		{[]string{"TYPE", "k"}, "+string\r\n"},
		{[]string{"TYPE", "nope"}, "+none\r\n"},
		{[]string{"STRLEN", "k"}, ":1\r\n"},
		{[]string{"TTL", "k"}, ":-1\r\n"},
		{[]string{"TTL", "nope"}, ":-2\r\n"},
		{[]string{"EXPIRE", "k", "10", "NX", "XX"}, "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"},
		{[]string{"GET", strings.Repeat("k", 17)}, "-ERR key is 17 bytes, above the limit of 16 (--max-key-bytes)\r\n"},
		{[]string{"SET", "k", strings.Repeat("v", 33)}, "-ERR value is 33 bytes, above the limit of 32 (--max-value-bytes)\r\n"},
		{[]string{"APPEND", "k", "x"}, "-ERR not supported by this cluster yet: not in the test backend\r\n"},
		{[]string{"SELECT", "0"}, "+OK\r\n"},
		{[]string{"SELECT", "1"}, "-ERR DB index is out of range\r\n"},
		{[]string{"CLIENT", "SETNAME", "a b"}, "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
		{[]string{"CLIENT", "SETNAME", "me"}, "+OK\r\n"},
		{[]string{"CLIENT", "GETNAME"}, "$2\r\nme\r\n"},
		{[]string{"CLIENT", "SETNAME"}, "-ERR wrong number of arguments for 'client|setname' command\r\n"},
		{[]string{"CLIENT", "SETINFO", "LIB-NAME", "test"}, "+OK\r\n"},
		{[]string{"CLUSTER", "SLOTS"}, "-ERR This instance has cluster support disabled\r\n"},
		{[]string{"CONFIG", "GET", "save"}, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"},
		{[]string{"CONFIG", "GET", "appendonly"}, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"},
		{[]string{"COMMAND", "INFO", "get", "nosuch"}, "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*1\r\n+@string\r\n*0\r\n*0\r\n*0\r\n*-1\r\n"},
		{[]string{"DBSIZE"}, ":2\r\n"},
		{[]string{"SCAN", "x"}, "-ERR invalid cursor\r\n"},
		{[]string{"SCAN", "12345"}, "-ERR invalid cursor\r\n"},
		{[]string{"KEYS", "*"}, "*2\r\n$1\r\nk\r\n$1\r\nn\r\n"},
		{[]string{"FLUSHALL", "NOW"}, "-ERR syntax error\r\n"},
		{[]string{"FLUSHALL"}, "+OK\r\n"},
		{[]string{"DBSIZE"}, ":0\r\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if got := c.do(tt.args...); got != tt.want {
				t.Fatalf("%q: got %q, want %q", tt.args, got, tt.want)
			}
		})
	}
}

func TestScanCursor(t *testing.T) {
	t.Parallel()
	addr := start(t, Options{})
	c := dialRaw(t, addr)
	var want []string
	for _, k := range []string{"a1", "a2", "a3", "b1", "a4"} {
		c.do("SET", k, "v")
		if k[0] == 'a' {
			want = append(want, k)
		}
	}
	var got []string
	cursor := "0"
	for i := 0; ; i++ {
		if i > 10 {
			t.Fatal("scan does not end")
		}
		r := c.do("SCAN", cursor, "MATCH", "a*", "COUNT", "2")
		_, v := redcon.ReadNextRESP([]byte(r))
		var els []redcon.RESP
		v.ForEach(func(e redcon.RESP) bool { els = append(els, e); return true })
		if len(els) != 2 {
			t.Fatalf("SCAN answered %q", r)
		}
		els[1].ForEach(func(k redcon.RESP) bool { got = append(got, k.String()); return true })
		cursor = els[0].String()
		if cursor == "0" {
			break
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("SCAN MATCH a* gave %q, want %q", got, want)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	addr := start(t, Options{Tokens: auth.Tokens{Data: "data-tok", Admin: "admin-tok"}})
	for _, tt := range []struct {
		name  string
		steps [][2]string // command (space-separated), reply
	}{
		{"no auth", [][2]string{
			{"GET k", "-NOAUTH Authentication required.\r\n"},
			{"PING", "-NOAUTH Authentication required.\r\n"},
			{"HELLO 3", "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"},
		}},
		{"wrong token", [][2]string{
			{"AUTH nope", "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
			{"AUTH someone data-tok", "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
			{"GET k", "-NOAUTH Authentication required.\r\n"},
		}},
		{"data token", [][2]string{
			{"AUTH data-tok", "+OK\r\n"},
			{"SET k v", "+OK\r\n"},
			{"FLUSHALL", "-NOPERM User default has no permissions to run the 'flushall' command (it needs the admin token)\r\n"},
		}},
		{"admin token", [][2]string{
			{"AUTH default admin-tok", "+OK\r\n"},
			{"FLUSHALL", "+OK\r\n"},
		}},
		{"hello auth", [][2]string{
			{"HELLO 2 AUTH default data-tok", "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:5\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"},
			{"GET nope", "$-1\r\n"},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			for _, s := range tt.steps {
				got := c.do(strings.Fields(s[0])...)
				if strings.HasPrefix(s[0], "HELLO 2") {
					// The connection id depends on the order the
					// subtests connected in.
					got = idRe(got)
				}
				if got != s[1] {
					t.Fatalf("%s: got %q, want %q", s[0], got, s[1])
				}
			}
		})
	}
}

// idRe puts id 5 into a HELLO reply whatever the connection's id.
func idRe(r string) string {
	i := strings.Index(r, "$2\r\nid\r\n:")
	if i < 0 {
		return r
	}
	j := i + len("$2\r\nid\r\n:")
	k := strings.Index(r[j:], "\r\n")
	return r[:j] + "5" + r[j+k:]
}

func TestRESP3(t *testing.T) {
	t.Parallel()
	addr := start(t, Options{})
	c := dialRaw(t, addr)
	if got := idRe(c.do("HELLO", "3")); !strings.HasPrefix(got, "%7\r\n$6\r\nserver\r\n") || !strings.Contains(got, "$5\r\nproto\r\n:3\r\n") {
		t.Fatalf("HELLO 3: %q", got)
	}
	for _, tt := range [][2]string{
		{"GET nope", "_\r\n"},
		{"CONFIG GET save", "%1\r\n$4\r\nsave\r\n$0\r\n\r\n"},
		{"HELLO 4", "-NOPROTO unsupported protocol version\r\n"},
	} {
		if got := c.do(strings.Fields(tt[0])...); got != tt[1] {
			t.Fatalf("%s: got %q, want %q", tt[0], got, tt[1])
		}
	}
	// Back to RESP2.
	c.do("HELLO", "2")
	if got := c.do("GET", "nope"); got != "$-1\r\n" {
		t.Fatalf("GET after HELLO 2: %q", got)
	}
}

func TestClusterMode(t *testing.T) {
	t.Parallel()
	addr := start(t, Options{Cluster: oneSlotCluster{}})
	c := dialRaw(t, addr)
	// "a" is in slot 15495, "b" in 3300, "{b}x" with b; slot 100 is "15" ... found below.
	frozenKey := ""
	for i := range 100000 {
		k := "k" + itoa(int64(i))
		if slot.OfString(k) == 100 {
			frozenKey = k
			break
		}
	}
	for _, tt := range [][2]string{
		{"GET a", "-MOVED 15495 127.0.0.1:7302\r\n"},
		{"SET b 1", "+OK\r\n"},
		{"MGET b {b}x", "*2\r\n$1\r\n1\r\n$-1\r\n"},
		{"MGET b c", "-CROSSSLOT Keys in request don't hash to the same slot\r\n"},
		{"GET " + frozenKey, "-TRYAGAIN slot 100 is frozen for a hand-off\r\n"},
		{"CLUSTER KEYSLOT a", ":15495\r\n"},
		{"CLUSTER MYID", "$40\r\n" + RedisNodeID("n1") + "\r\n"},
		{"CLUSTER SLOTS", "*2\r\n*3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7301\r\n$40\r\n" + RedisNodeID("n1") + "\r\n" +
			"*3\r\n:8192\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7302\r\n$40\r\n" + RedisNodeID("n2") + "\r\n"},
		{"SELECT 1", "-ERR SELECT is not allowed in cluster mode\r\n"},
	} {
		if got := c.do(strings.Fields(tt[0])...); got != tt[1] {
			t.Fatalf("%s: got %q, want %q", tt[0], got, tt[1])
		}
	}
	nodes := c.do("CLUSTER", "NODES")
	for _, want := range []string{
		RedisNodeID("n1") + " 127.0.0.1:7301@17301 myself,master - 0 0 3 connected 0-8191\n",
		RedisNodeID("n2") + " 127.0.0.1:7302@17302 master - 0 0 3 connected 8192-16383\n",
	} {
		if !strings.Contains(nodes, want) {
			t.Fatalf("CLUSTER NODES %q lacks %q", nodes, want)
		}
	}
	if info := c.do("CLUSTER", "INFO"); !strings.Contains(info, "cluster_state:ok\r\n") || !strings.Contains(info, "cluster_slots_assigned:16384\r\n") {
		t.Fatalf("CLUSTER INFO: %q", info)
	}
}

// TestBadFrames: a malformed frame gets Redis's protocol error and the
// connection is closed, as Redis closes it; errors in well-formed
// commands keep the connection, and pipelined commands are answered in
// order.
func TestBadFrames(t *testing.T) {
	t.Parallel()
	addr := start(t, Options{})
	for _, tt := range []struct {
		name  string
		frame string
		want  string
	}{
		{"not a bulk", "*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"},
		{"bad bulk length", "*1\r\n$x\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"bad multibulk length", "*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.send([]byte(tt.frame))
			if got := c.reply(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if !c.closed() {
				t.Fatal("the connection stayed open after a protocol error")
			}
		})
	}
	t.Run("pipeline survives command errors", func(t *testing.T) {
		c := dialRaw(t, addr)
		var b []byte
		b = append(b, cmdFrame("SET", "p", "1")...)
		b = append(b, cmdFrame("INCR")...)
		b = append(b, cmdFrame("INCR", "p")...)
		b = append(b, []byte("PING\r\n")...) // inline, as redis-cli in a terminal sends
		b = append(b, cmdFrame("GET", "p")...)
		c.send(b)
		for _, want := range []string{"+OK\r\n", "-ERR wrong number of arguments for 'incr' command\r\n", ":2\r\n", "+PONG\r\n", "$1\r\n2\r\n"} {
			if got := c.reply(); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
		if got := c.do("QUIT"); got != "+OK\r\n" || !c.closed() {
			t.Fatalf("QUIT: %q, or the connection stayed open", got)
		}
	})
}

// TestPipelineBatches: runs of SETs and GETs in a pipeline are answered
// exactly as one by one (a key set twice keeps its last value); in cluster
// mode a run with a key of another node falls back to one by one, so each
// command gets its own answer.
func TestPipelineBatches(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		cluster Cluster
		cmds    [][]string
		want    []string
	}{
		{"proxy", nil, [][]string{
			{"SET", "a", "1"}, {"SET", "a", "2"}, {"SET", "b", "3"}, {"GET", "a"}, {"GET", "b"}, {"GET", "nope"},
			{"INCR", "a"}, {"GET", "a"}, {"GET", "a"}, {"SET", "c"}, {"SET", "c", "x"}, {"SET", "d", "y"}, {"MGET", "c", "d"},
		}, []string{
			"+OK\r\n", "+OK\r\n", "+OK\r\n", "$1\r\n2\r\n", "$1\r\n3\r\n", "$-1\r\n",
			":3\r\n", "$1\r\n3\r\n", "$1\r\n3\r\n", "-ERR wrong number of arguments for 'set' command\r\n", "+OK\r\n", "+OK\r\n",
			"*2\r\n$1\r\nx\r\n$1\r\ny\r\n",
		}},
		{"cluster", oneSlotCluster{}, [][]string{
			{"SET", "b", "1"}, {"SET", "a", "2"}, {"SET", "{b}x", "3"}, {"GET", "b"}, {"GET", "a"}, {"GET", "{b}x"},
		}, []string{
			"+OK\r\n", "-MOVED 15495 127.0.0.1:7302\r\n", "+OK\r\n", "$1\r\n1\r\n", "-MOVED 15495 127.0.0.1:7302\r\n", "$1\r\n3\r\n",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, start(t, Options{Cluster: tt.cluster}))
			var b []byte
			for _, cmd := range tt.cmds {
				b = append(b, cmdFrame(cmd...)...)
			}
			c.send(b) // one write: the server reads it as one pipeline
			for i, want := range tt.want {
				if got := c.reply(); got != want {
					t.Fatalf("reply %d (%q): got %q, want %q", i, tt.cmds[i], got, want)
				}
			}
		})
	}
}

// TestPipelineIncrements: a run of increments on one key answers the value
// after each; one that is not an integer, or a run that would overflow,
// gets the one-by-one answers.
func TestPipelineIncrements(t *testing.T) {
	t.Parallel()
	c := dialRaw(t, start(t, Options{}))
	for _, tt := range []struct {
		cmds [][]string
		want []string
	}{
		{[][]string{{"INCR", "n"}, {"INCRBY", "n", "10"}, {"DECR", "n"}, {"DECRBY", "n", "5"}, {"INCR", "m"}, {"GET", "n"}},
			[]string{":1\r\n", ":11\r\n", ":10\r\n", ":5\r\n", ":1\r\n", "$1\r\n5\r\n"}},
		{[][]string{{"SET", "s", "x"}, {"INCR", "s"}, {"INCR", "s"}},
			[]string{"+OK\r\n", "-ERR value is not an integer or out of range\r\n", "-ERR value is not an integer or out of range\r\n"}},
		{[][]string{{"SET", "b", "9223372036854775806"}, {"INCR", "b"}, {"INCR", "b"}, {"GET", "b"}},
			[]string{"+OK\r\n", ":9223372036854775807\r\n", "-ERR increment or decrement would overflow\r\n", "$19\r\n9223372036854775807\r\n"}},
	} {
		var b []byte
		for _, cmd := range tt.cmds {
			b = append(b, cmdFrame(cmd...)...)
		}
		c.send(b)
		for i, want := range tt.want {
			if got := c.reply(); got != want {
				t.Fatalf("reply %d (%q): got %q, want %q", i, tt.cmds[i], got, want)
			}
		}
	}
}

// TestRequestSizeGuard: a connection that sends more than the limit
// without completing a command gets a protocol error and is closed,
// whatever bulk length it declared; before AUTH (tokens set) the limit is
// 64 KiB, after it the full one, and every completed command restarts the
// count.
func TestRequestSizeGuard(t *testing.T) {
	t.Parallel()
	small := limits.KV{MaxKeyBytes: 16, MaxValueBytes: 1024}
	// oversized sends a SET declaring a 100 MB value and exactly n bytes
	// in all, so the server reads every byte before closing (an unread
	// byte would turn its close into a reset that hides the reply).
	oversized := func(n int) []byte {
		b := []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n")
		return append(b, bytes.Repeat([]byte("x"), n-len(b))...)
	}
	for _, tt := range []struct {
		name  string
		o     Options
		auth  []string
		limit int
	}{
		{"open server, configured limit", Options{Limits: small, MaxRequestBytes: 1}, nil, 16 + 1024 + 64<<10},
		{"before AUTH", Options{Tokens: auth.Tokens{Data: "d", Admin: "a"}}, nil, 64 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := dialRaw(t, start(t, tt.o))
			c.send(oversized(tt.limit + 1))
			want := fmt.Sprintf("-ERR Protocol error: request over %d bytes without a complete command\r\n", tt.limit)
			if got := c.reply(); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			if !c.closed() {
				t.Fatal("the connection stayed open")
			}
		})
	}
	t.Run("after AUTH the full limit applies", func(t *testing.T) {
		t.Parallel()
		c := dialRaw(t, start(t, Options{Tokens: auth.Tokens{Data: "d", Admin: "a"}}))
		if got := c.do("AUTH", "d"); got != "+OK\r\n" {
			t.Fatalf("AUTH: %q", got)
		}
		big := strings.Repeat("v", 200<<10)
		for range 3 { // each completed command restarts the count
			if got := c.do("SET", "k", big); got != "+OK\r\n" {
				t.Fatalf("SET of 200 KiB: %q", got)
			}
		}
		if got := c.do("STRLEN", "k"); got != fmt.Sprintf(":%d\r\n", len(big)) {
			t.Fatalf("STRLEN: %q", got)
		}
	})
}
