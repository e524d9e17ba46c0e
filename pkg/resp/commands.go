package resp

import (
	"slices"
	"strings"
)

// flag is a property of a command.
type flag uint16

const (
	flagWrite    flag = 1 << iota // changes data
	flagReadonly                  // reads data only
	flagFast                      // O(1) or O(log N)
	flagNoAuth                    // allowed before AUTH
	flagAdmin                     // needs the admin token
	flagLoading                   // allowed while loading (Redis's flag; kept for COMMAND INFO)
	flagStale
	flagDenyOOM
)

var flagNames = []struct {
	f    flag
	name string
}{
	{flagWrite, "write"}, {flagReadonly, "readonly"}, {flagDenyOOM, "denyoom"}, {flagAdmin, "admin"},
	{flagNoAuth, "no_auth"}, {flagLoading, "loading"}, {flagStale, "stale"}, {flagFast, "fast"},
}

// command is one entry of the command table: what COMMAND INFO says about
// it (Redis's arity: n exact, -n at least n, the name counted; key
// positions first, last (negative: from the end), step) and its handler.
type command struct {
	name               string
	arity              int
	flags              flag
	first, last, step  int
	group, since, help string
	run                func(*call) error
}

func (c *command) has(f flag) bool { return c.flags&f != 0 }

// keysOf returns the key arguments of args by the table's key positions.
func (c *command) keysOf(args [][]byte) [][]byte {
	if c.first == 0 || c.first >= len(args) {
		return nil
	}
	last := c.last
	if last < 0 {
		last = len(args) + last
	}
	last = min(last, len(args)-1)
	var keys [][]byte
	for i := c.first; i <= last; i += c.step {
		keys = append(keys, args[i])
	}
	return keys
}

func (c *command) flagList() []string {
	var out []string
	for _, f := range flagNames {
		if c.has(f.f) {
			out = append(out, f.name)
		}
	}
	return out
}

var table = map[string]*command{}

// sortedCommands lists the table by name (COMMAND, COMMAND DOCS).
var sortedCommands []*command

func lookup(name string) *command { return table[name] }

func register(cs ...*command) {
	for _, c := range cs {
		table[c.name] = c
		sortedCommands = append(sortedCommands, c)
	}
	slices.SortFunc(sortedCommands, func(a, b *command) int { return strings.Compare(a.name, b.name) })
}

func init() {
	const (
		rw   = flagWrite | flagDenyOOM
		ro   = flagReadonly
		conn = flagNoAuth | flagLoading | flagStale | flagFast
	)
	register(
		// connection
		&command{name: "ping", arity: -1, flags: flagFast, group: "connection", since: "1.0.0", help: "Returns the server's liveliness response.", run: cmdPing},
		&command{name: "echo", arity: 2, flags: flagFast, group: "connection", since: "1.0.0", help: "Returns the given string.", run: cmdEcho},
		&command{name: "hello", arity: -1, flags: conn, group: "connection", since: "6.0.0", help: "Handshakes with the server: protocol version, AUTH, client name.", run: cmdHello},
		&command{name: "auth", arity: -2, flags: conn, group: "connection", since: "1.0.0", help: "Authenticates the connection with the data or the admin token.", run: cmdAuth},
		&command{name: "select", arity: 2, flags: flagLoading | flagStale | flagFast, group: "connection", since: "1.0.0", help: "Selects database 0, the only one.", run: cmdSelect},
		&command{name: "quit", arity: -1, flags: conn, group: "connection", since: "1.0.0", help: "Closes the connection.", run: cmdQuit},
		&command{name: "client", arity: -2, flags: flagLoading | flagStale, group: "connection", since: "2.4.0", help: "CLIENT SETNAME|GETNAME|ID|SETINFO|INFO|LIST.", run: cmdClient},
		&command{name: "readonly", arity: 1, flags: flagLoading | flagStale | flagFast, group: "cluster", since: "3.0.0", help: "Accepted; reads are always served by the slot's owner.", run: cmdOK},
		&command{name: "readwrite", arity: 1, flags: flagLoading | flagStale | flagFast, group: "cluster", since: "3.0.0", help: "Accepted.", run: cmdOK},
		&command{name: "asking", arity: 1, flags: flagFast, group: "cluster", since: "3.0.0", help: "Accepted; slotkv never answers ASK.", run: cmdOK},

		// strings
		&command{name: "get", arity: 2, flags: ro | flagFast, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Returns the value of a key.", run: cmdGet},
		&command{name: "set", arity: -3, flags: rw, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Sets a key's value, with NX|XX, GET, EX|PX|EXAT|PXAT|KEEPTTL.", run: cmdSet},
		&command{name: "setnx", arity: 3, flags: rw | flagFast, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Sets a key's value only when the key does not exist.", run: cmdSetNX},
		&command{name: "setex", arity: 4, flags: rw, first: 1, last: 1, step: 1, group: "string", since: "2.0.0", help: "Sets a key's value and its expiry in seconds.", run: cmdSetEX},
		&command{name: "psetex", arity: 4, flags: rw, first: 1, last: 1, step: 1, group: "string", since: "2.6.0", help: "Sets a key's value and its expiry in milliseconds.", run: cmdPSetEX},
		&command{name: "getset", arity: 3, flags: rw | flagFast, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Sets a key's value and returns the previous one.", run: cmdGetSet},
		&command{name: "getdel", arity: 2, flags: flagWrite | flagFast, first: 1, last: 1, step: 1, group: "string", since: "6.2.0", help: "Returns a key's value and deletes the key.", run: cmdGetDel},
		&command{name: "getex", arity: -2, flags: flagWrite | flagFast, first: 1, last: 1, step: 1, group: "string", since: "6.2.0", help: "Returns a key's value and sets or removes its expiry.", run: cmdGetEx},
		&command{name: "mget", arity: -2, flags: ro | flagFast, first: 1, last: -1, step: 1, group: "string", since: "1.0.0", help: "Returns the values of keys.", run: cmdMGet},
		&command{name: "mset", arity: -3, flags: rw, first: 1, last: -1, step: 2, group: "string", since: "1.0.1", help: "Sets keys to values.", run: cmdMSet},
		&command{name: "msetnx", arity: -3, flags: rw, first: 1, last: -1, step: 2, group: "string", since: "1.0.1", help: "Sets keys to values only when none exists (keys in one slot).", run: cmdMSetNX},
		&command{name: "incr", arity: 2, flags: rw | flagFast, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Adds 1 to a key's integer value.", run: incrBy(1, false)},
		&command{name: "decr", arity: 2, flags: rw | flagFast, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Subtracts 1 from a key's integer value.", run: incrBy(-1, false)},
		&command{name: "incrby", arity: 3, flags: rw | flagFast, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Adds an increment to a key's integer value.", run: incrBy(1, true)},
		&command{name: "decrby", arity: 3, flags: rw | flagFast, first: 1, last: 1, step: 1, group: "string", since: "1.0.0", help: "Subtracts a decrement from a key's integer value.", run: incrBy(-1, true)},
		&command{name: "append", arity: 3, flags: rw | flagFast, first: 1, last: 1, step: 1, group: "string", since: "2.0.0", help: "Appends a string to a key's value.", run: cmdAppend},
		&command{name: "strlen", arity: 2, flags: ro | flagFast, first: 1, last: 1, step: 1, group: "string", since: "2.2.0", help: "Returns the length of a key's value.", run: cmdStrlen},

		// generic
		&command{name: "del", arity: -2, flags: flagWrite, first: 1, last: -1, step: 1, group: "generic", since: "1.0.0", help: "Deletes keys.", run: cmdDel},
		&command{name: "unlink", arity: -2, flags: flagWrite | flagFast, first: 1, last: -1, step: 1, group: "generic", since: "4.0.0", help: "Deletes keys.", run: cmdDel},
		&command{name: "exists", arity: -2, flags: ro | flagFast, first: 1, last: -1, step: 1, group: "generic", since: "1.0.0", help: "Counts the keys that exist.", run: cmdExists},
		&command{name: "expire", arity: -3, flags: flagWrite | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "1.0.0", help: "Sets a key's expiry in seconds.", run: expireCmd(1000, false)},
		&command{name: "pexpire", arity: -3, flags: flagWrite | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "2.6.0", help: "Sets a key's expiry in milliseconds.", run: expireCmd(1, false)},
		&command{name: "expireat", arity: -3, flags: flagWrite | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "1.2.0", help: "Sets a key's expiry to a Unix time in seconds.", run: expireCmd(1000, true)},
		&command{name: "pexpireat", arity: -3, flags: flagWrite | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "2.6.0", help: "Sets a key's expiry to a Unix time in milliseconds.", run: expireCmd(1, true)},
		&command{name: "ttl", arity: 2, flags: ro | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "1.0.0", help: "Returns a key's time to live in seconds.", run: ttlCmd(1000, false)},
		&command{name: "pttl", arity: 2, flags: ro | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "2.6.0", help: "Returns a key's time to live in milliseconds.", run: ttlCmd(1, false)},
		&command{name: "expiretime", arity: 2, flags: ro | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "7.0.0", help: "Returns a key's expiry as a Unix time in seconds.", run: ttlCmd(1000, true)},
		&command{name: "pexpiretime", arity: 2, flags: ro | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "7.0.0", help: "Returns a key's expiry as a Unix time in milliseconds.", run: ttlCmd(1, true)},
		&command{name: "persist", arity: 2, flags: flagWrite | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "2.2.0", help: "Removes a key's expiry.", run: cmdPersist},
		&command{name: "type", arity: 2, flags: ro | flagFast, first: 1, last: 1, step: 1, group: "generic", since: "1.0.0", help: "Returns a key's type: string or none.", run: cmdType},
		&command{name: "scan", arity: -2, flags: ro, group: "generic", since: "2.8.0", help: "Iterates over the keys (cursor, MATCH, COUNT, TYPE).", run: cmdScan},
		&command{name: "keys", arity: 2, flags: ro, group: "generic", since: "1.0.0", help: "Returns the keys matching a pattern (a full scan).", run: cmdKeys},

		// server
		&command{name: "dbsize", arity: 1, flags: ro | flagFast, group: "server", since: "1.0.0", help: "Returns the number of keys.", run: cmdDBSize},
		&command{name: "flushall", arity: -1, flags: flagWrite | flagAdmin, group: "server", since: "1.0.0", help: "Deletes every key (admin token).", run: cmdFlushAll},
		&command{name: "flushdb", arity: -1, flags: flagWrite | flagAdmin, group: "server", since: "1.0.0", help: "Deletes every key of database 0, the only one (admin token).", run: cmdFlushAll},
		&command{name: "info", arity: -1, flags: flagLoading | flagStale, group: "server", since: "1.0.0", help: "Server, clients, keyspace and cluster information.", run: cmdInfo},
		&command{name: "command", arity: -1, flags: flagLoading | flagStale, group: "server", since: "2.8.13", help: "COMMAND, COMMAND COUNT|INFO|DOCS|LIST.", run: cmdCommand},
		&command{name: "config", arity: -2, flags: flagLoading | flagStale, group: "server", since: "2.0.0", help: "CONFIG GET (read-only settings), CONFIG RESETSTAT.", run: cmdConfig},
		&command{name: "time", arity: 1, flags: flagLoading | flagStale | flagFast, group: "server", since: "2.6.0", help: "Returns the server time.", run: cmdTime},
		&command{name: "cluster", arity: -2, flags: 0, group: "cluster", since: "3.0.0", help: "CLUSTER SLOTS|SHARDS|NODES|INFO|KEYSLOT|MYID (cluster mode).", run: cmdCluster},
	)
}
