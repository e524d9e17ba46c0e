package resp

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/match"

	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/version"
)

func sinceSeconds(t time.Time) float64 { return time.Since(t).Seconds() }

// cmdInfo is INFO [section ...]: server, clients, stats, keyspace and
// cluster ("all", "everything" and "default" give every one).
func cmdInfo(x *call) error {
	want := map[string]bool{}
	for _, a := range x.args[1:] {
		want[strings.ToLower(string(a))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	var b strings.Builder
	section := func(name string, lines ...string) {
		if !all && !want[name] {
			return
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		fmt.Fprintf(&b, "# %s\r\n", strings.ToUpper(name[:1])+name[1:])
		for _, l := range lines {
			b.WriteString(l)
			b.WriteString("\r\n")
		}
	}
	mode := "standalone"
	if x.s.o.Cluster != nil {
		mode = "cluster"
	}
	port := ""
	if nc := x.w.c.NetConn(); nc != nil {
		_, port, _ = net.SplitHostPort(nc.LocalAddr().String())
	}
	up := int64(sinceSeconds(x.s.started))
	section("server",
		"redis_version:"+redisVersion,
		"slotkv_version:"+version.Version,
		"slotkv_service:"+x.s.o.Name,
		"redis_mode:"+mode,
		"os:"+runtime.GOOS+" "+runtime.GOARCH,
		"arch_bits:64",
		"process_id:"+strconv.Itoa(os.Getpid()),
		"tcp_port:"+port,
		"uptime_in_seconds:"+itoa(up),
		"uptime_in_days:"+itoa(up/86400),
	)
	section("clients",
		"connected_clients:"+itoa(x.s.connected.Load()),
		"maxclients:10000",
	)
	section("stats",
		"total_connections_received:"+itoa(x.s.total.Load()),
		"total_commands_processed:"+itoa(x.s.processed.Load()),
	)
	if all || want["keyspace"] {
		// The key count is one fan-out to the nodes; a failure leaves the
		// section empty rather than failing INFO.
		var lines []string
		if n, err := x.backend().DBSize(x.ctx); err == nil && n > 0 {
			lines = append(lines, fmt.Sprintf("db0:keys=%d,expires=0,avg_ttl=0", n))
		}
		section("keyspace", lines...)
	}
	enabled := "0"
	if x.s.o.Cluster != nil {
		enabled = "1"
	}
	section("cluster", "cluster_enabled:"+enabled)
	x.w.bulkString(b.String())
	return nil
}

// cmdCommand is COMMAND, COMMAND COUNT, COMMAND INFO [name ...], COMMAND
// DOCS [name ...] and COMMAND LIST.
func cmdCommand(x *call) error {
	if len(x.args) == 1 {
		x.w.array(len(sortedCommands))
		for _, c := range sortedCommands {
			x.commandInfo(c)
		}
		return nil
	}
	sub := strings.ToLower(string(x.args[1]))
	names := x.args[2:]
	switch sub {
	case "count":
		x.w.int(int64(len(sortedCommands)))
	case "list":
		x.w.array(len(sortedCommands))
		for _, c := range sortedCommands {
			x.w.bulkString(c.name)
		}
	case "info":
		if len(names) == 0 {
			x.w.array(len(sortedCommands))
			for _, c := range sortedCommands {
				x.commandInfo(c)
			}
			return nil
		}
		x.w.array(len(names))
		for _, n := range names {
			if c := lookup(strings.ToLower(string(n))); c != nil {
				x.commandInfo(c)
			} else {
				x.w.nullArray()
			}
		}
	case "docs":
		var cs []*command
		if len(names) == 0 {
			cs = sortedCommands
		}
		for _, n := range names {
			if c := lookup(strings.ToLower(string(n))); c != nil {
				cs = append(cs, c)
			}
		}
		x.w.mapHeader(len(cs))
		for _, c := range cs {
			x.w.bulkString(c.name)
			x.w.mapHeader(3)
			x.w.bulkString("summary")
			x.w.bulkString(c.help)
			x.w.bulkString("since")
			x.w.bulkString(c.since)
			x.w.bulkString("group")
			x.w.bulkString(c.group)
		}
	default:
		return Error(fmt.Sprintf("ERR unknown subcommand '%s'. Try COMMAND HELP.", clip(x.args[1])))
	}
	return nil
}

// commandInfo writes one COMMAND INFO entry in Redis 7's ten-element
// shape: name, arity, flags, first key, last key, step, ACL categories,
// tips, key specifications, subcommands.
func (x *call) commandInfo(c *command) {
	x.w.array(10)
	x.w.bulkString(c.name)
	x.w.int(int64(c.arity))
	fl := c.flagList()
	x.w.setHeader(len(fl))
	for _, f := range fl {
		x.w.status(f)
	}
	x.w.int(int64(c.first))
	x.w.int(int64(c.last))
	x.w.int(int64(c.step))
	x.w.setHeader(1)
	x.w.status("@" + c.group)
	x.w.array(0)
	x.w.array(0)
	x.w.array(0)
}

// configValues are what CONFIG GET answers: the settings tools read
// (redis-benchmark reads save and appendonly) with slotkv's fixed values.
var configValues = [][2]string{
	{"appendonly", "no"},
	{"databases", "1"},
	{"maxmemory", "0"},
	{"maxmemory-policy", "noeviction"},
	{"save", ""},
	{"timeout", "0"},
}

// cmdConfig is CONFIG GET pattern [pattern ...] and CONFIG RESETSTAT;
// slotkv is configured by flags, so CONFIG SET is refused.
func cmdConfig(x *call) error {
	sub := strings.ToLower(string(x.args[1]))
	switch sub {
	case "get":
		if len(x.args) < 3 {
			return Error("ERR wrong number of arguments for 'config|get' command")
		}
		var out [][2]string
		for _, kv := range configValues {
			for _, p := range x.args[2:] {
				if match.Match(kv[0], strings.ToLower(string(p))) {
					out = append(out, kv)
					break
				}
			}
		}
		if x.s.o.Cluster != nil {
			for _, p := range x.args[2:] {
				if match.Match("cluster-enabled", strings.ToLower(string(p))) {
					out = append(out, [2]string{"cluster-enabled", "yes"})
					break
				}
			}
		}
		x.w.mapHeader(len(out))
		for _, kv := range out {
			x.w.bulkString(kv[0])
			x.w.bulkString(kv[1])
		}
	case "resetstat":
		x.w.ok()
	case "set":
		return Error("ERR CONFIG SET is not supported: slotkv is configured by its command-line flags")
	default:
		return Error(fmt.Sprintf("ERR unknown subcommand '%s'. Try CONFIG HELP.", clip(x.args[1])))
	}
	return nil
}

func cmdTime(x *call) error {
	now := time.Now()
	x.w.array(2)
	x.w.bulkString(itoa(now.Unix()))
	x.w.bulkString(itoa(int64(now.Nanosecond() / 1000)))
	return nil
}

// RedisNodeID is the 40-hex-digit id Redis Cluster tools expect for a
// slotkv node id: the SHA-1 of the id, the same on every node.
func RedisNodeID(id string) string {
	h := sha1.Sum([]byte(id))
	return hex.EncodeToString(h[:])
}

// cmdCluster is CLUSTER SLOTS|SHARDS|NODES|INFO|KEYSLOT|MYID.
func cmdCluster(x *call) error {
	sub := strings.ToLower(string(x.args[1]))
	cl := x.s.o.Cluster
	if cl == nil {
		return Error("ERR This instance has cluster support disabled")
	}
	wrong := Error(fmt.Sprintf("ERR wrong number of arguments for 'cluster|%s' command", sub))
	st := cl.State()
	switch sub {
	case "keyslot":
		if len(x.args) != 3 {
			return wrong
		}
		x.w.int(int64(slot.Of(x.args[2])))
	case "myid":
		x.w.bulkString(RedisNodeID(st.Self))
	case "slots":
		var n int
		for _, nd := range st.Nodes {
			if nd.Addr != "" {
				n += len(nd.Ranges)
			}
		}
		x.w.array(n)
		for _, nd := range st.Nodes {
			if nd.Addr == "" {
				continue
			}
			host, port := splitAddr(nd.Addr)
			for _, r := range nd.Ranges {
				x.w.array(3)
				x.w.int(int64(r.Start))
				x.w.int(int64(r.End))
				x.w.array(3)
				x.w.bulkString(host)
				x.w.int(port)
				x.w.bulkString(RedisNodeID(nd.ID))
			}
		}
	case "shards":
		var shards []ClusterNode
		for _, nd := range st.Nodes {
			if nd.Addr != "" {
				shards = append(shards, nd)
			}
		}
		x.w.array(len(shards))
		for _, nd := range shards {
			host, port := splitAddr(nd.Addr)
			x.w.mapHeader(2)
			x.w.bulkString("slots")
			x.w.array(2 * len(nd.Ranges))
			for _, r := range nd.Ranges {
				x.w.int(int64(r.Start))
				x.w.int(int64(r.End))
			}
			x.w.bulkString("nodes")
			x.w.array(1)
			x.w.mapHeader(7)
			x.w.bulkString("id")
			x.w.bulkString(RedisNodeID(nd.ID))
			x.w.bulkString("port")
			x.w.int(port)
			x.w.bulkString("ip")
			x.w.bulkString(host)
			x.w.bulkString("endpoint")
			x.w.bulkString(host)
			x.w.bulkString("role")
			x.w.bulkString("master")
			x.w.bulkString("replication-offset")
			x.w.int(0)
			x.w.bulkString("health")
			x.w.bulkString("online")
		}
	case "nodes":
		var b strings.Builder
		for _, nd := range st.Nodes {
			if nd.Addr == "" {
				continue
			}
			host, port := splitAddr(nd.Addr)
			flags := "master"
			if nd.ID == st.Self {
				flags = "myself,master"
			}
			fmt.Fprintf(&b, "%s %s:%d@%d %s - 0 0 %d connected", RedisNodeID(nd.ID), host, port, port+10000, flags, st.Version)
			for _, r := range nd.Ranges {
				if r.Start == r.End {
					fmt.Fprintf(&b, " %d", r.Start)
				} else {
					fmt.Fprintf(&b, " %d-%d", r.Start, r.End)
				}
			}
			b.WriteString("\n")
		}
		x.w.bulkString(b.String())
	case "info":
		assigned, known := 0, 0
		for _, nd := range st.Nodes {
			known++
			for _, r := range nd.Ranges {
				assigned += r.Len()
			}
		}
		state := "ok"
		if assigned < slot.Count {
			state = "fail"
		}
		info := fmt.Sprintf("cluster_enabled:1\r\ncluster_state:%s\r\ncluster_slots_assigned:%d\r\ncluster_slots_ok:%d\r\n"+
			"cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:%d\r\ncluster_size:%d\r\n"+
			"cluster_current_epoch:%d\r\ncluster_my_epoch:%d\r\n",
			state, assigned, assigned, known, known, st.Version, st.Version)
		x.w.bulkString(info)
	default:
		return Error(fmt.Sprintf("ERR unknown subcommand '%s'. Try CLUSTER HELP.", clip(x.args[1])))
	}
	return nil
}

// splitAddr splits host:port for CLUSTER replies.
func splitAddr(addr string) (string, int64) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	port, _ := strconv.ParseInt(p, 10, 64)
	return host, port
}

// cursorTable remembers the scan positions behind SCAN's integer cursors,
// the oldest forgotten first once max are held.
type cursorTable struct {
	mu    sync.Mutex
	max   int
	next  uint64
	pos   map[uint64][]byte
	order []uint64
}

func newCursorTable(max int) *cursorTable {
	// Ids start at a random point so a cursor from before a restart
	// is unknown (invalid cursor) rather than another scan's position.
	return &cursorTable{max: max, pos: map[uint64][]byte{}, next: rand.Uint64N(1 << 62)}
}

func (t *cursorTable) put(pos []byte) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	id := t.next
	t.pos[id] = pos
	t.order = append(t.order, id)
	for len(t.order) > t.max {
		delete(t.pos, t.order[0])
		t.order = t.order[1:]
	}
	return id
}

func (t *cursorTable) get(id uint64) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.pos[id]
	return p, ok
}
