package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// Tokens of the Redis tests: the data token opens the data commands, the
// admin token FLUSHALL too.
const (
	redisData  = "redis-data-token"
	redisAdmin = "redis-admin-token"
)

// redisStack is three storage nodes serving RESP in cluster mode,
// bootstrapped with slotkvctl (so the topology carries their RESP
// addresses as the nodes report them), and a router serving RESP in proxy
// mode; all real processes.
type redisStack struct {
	*cluster
	routerRESP string
}

func startRedisStack(t testing.TB) *redisStack {
	t.Helper()
	c := &cluster{Cluster: testcluster.Start(t, 3, testcluster.Options{Token: redisAdmin, RESP: true,
		Args: []string{"--data-token", redisData}, Etcd: etcdtest.Start(t)}), t: t}
	c.ctl("bootstrap", "--storage", c.storageAddrs())
	c.router = proctest.Start(t, proctest.Bin(t, "slotkv-router"), append([]string{
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--resp-addr", "127.0.0.1:0",
		"--data-token", redisData, "--admin-token", redisAdmin}, c.EtcdArgs()...)...)
	c.waitReady(c.router.HTTP)
	if c.router.RESP == "" {
		t.Fatal("the router's listen file has no RESP address")
	}
	for _, n := range c.Nodes {
		if n.Proc.RESP == "" {
			t.Fatalf("node %s's listen file has no RESP address", n.ID)
		}
	}
	return &redisStack{cluster: c, routerRESP: c.router.RESP}
}

func (s *redisStack) nodeRESP() []string {
	var out []string
	for _, n := range s.Nodes {
		out = append(out, n.Proc.RESP)
	}
	return out
}

func (s *redisStack) proxyClient(t testing.TB, protocol int, password string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.routerRESP, Protocol: protocol, Password: password})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func (s *redisStack) clusterClient(t testing.TB, password string) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: s.nodeRESP(), Password: password})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// step is one command of the command list and what its reply must be.
type step struct {
	name string
	run  func(ctx context.Context, rdb redis.UniversalClient, k func(string) string) error
}

// want checks a go-redis result: want(cmd.Result())(expected).
func want[T comparable](got T, err error) func(T) error {
	return func(w T) error {
		if err != nil {
			return err
		}
		if got != w {
			return fmt.Errorf("got %v, want %v", got, w)
		}
		return nil
	}
}

func wantNil(err error) error {
	if !errors.Is(err, redis.Nil) {
		return fmt.Errorf("got %v, want a nil reply", err)
	}
	return nil
}

func wantErr(err error, prefix string) error {
	if err == nil || !strings.HasPrefix(err.Error(), prefix) {
		return fmt.Errorf("got error %v, want one starting %q", err, prefix)
	}
	return nil
}

// commandList runs the command list with assertions on every
// reply. k names a key; in cluster mode every k shares one hash tag, so
// multi-key commands are in one slot; in proxy mode they are spread
// over slots (and nodes), which the router fans out.
func commandList() []step {
	return []step{
		{"PING", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			return want(r.Ping(ctx).Result())("PONG")
		}},
		{"ECHO", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			return want(r.Echo(ctx, "hi").Result())("hi")
		}},
		{"SELECT 0", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			return want(r.Do(ctx, "SELECT", 0).Text())("OK")
		}},
		{"CLIENT SETNAME GETNAME ID", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			c, ok := r.(*redis.Client)
			if !ok {
				return nil // per connection: on a cluster client each node is another connection
			}
			conn := c.Conn()
			defer conn.Close()
			if err := want(conn.ClientSetName(ctx, "e2e").Result())(true); err != nil {
				return err
			}
			if err := want(conn.ClientGetName(ctx).Result())("e2e"); err != nil {
				return err
			}
			id, err := conn.ClientID(ctx).Result()
			if err != nil || id <= 0 {
				return fmt.Errorf("CLIENT ID %d, %v", id, err)
			}
			info, err := conn.Do(ctx, "CLIENT", "INFO").Text()
			if err != nil || !strings.Contains(info, fmt.Sprintf("id=%d ", id)) || !strings.Contains(info, " name=e2e ") {
				return fmt.Errorf("CLIENT INFO %q, %v", info, err)
			}
			return nil
		}},
		{"GET SET", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := wantNil(r.Get(ctx, k("s")).Err()); err != nil {
				return err
			}
			if err := want(r.Set(ctx, k("s"), "v1", 0).Result())("OK"); err != nil {
				return err
			}
			return want(r.Get(ctx, k("s")).Result())("v1")
		}},
		{"SET NX XX GET KEEPTTL", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.SetNX(ctx, k("s"), "x", 0).Result())(false); err != nil {
				return err
			}
			if err := want(r.SetXX(ctx, k("s"), "v2", 0).Result())(true); err != nil {
				return err
			}
			if err := want(r.SetXX(ctx, k("absent"), "v", 0).Result())(false); err != nil {
				return err
			}
			if err := want(r.SetArgs(ctx, k("s"), "v3", redis.SetArgs{Get: true}).Result())("v2"); err != nil {
				return err
			}
			if err := want(r.SetArgs(ctx, k("s"), "v4", redis.SetArgs{Mode: "NX", Get: true}).Result())("v3"); err != nil {
				return err
			}
			if err := want(r.Get(ctx, k("s")).Result())("v3"); err != nil {
				return err
			}
			if err := want(r.Set(ctx, k("s"), "v5", 100*time.Second).Result())("OK"); err != nil {
				return err
			}
			if err := want(r.SetArgs(ctx, k("s"), "v6", redis.SetArgs{KeepTTL: true}).Result())("OK"); err != nil {
				return err
			}
			ttl, err := r.TTL(ctx, k("s")).Result()
			if err != nil || ttl <= 0 || ttl > 100*time.Second {
				return fmt.Errorf("TTL after KEEPTTL: %v %v", ttl, err)
			}
			return want(r.Get(ctx, k("s")).Result())("v6")
		}},
		{"SETNX SETEX PSETEX GETSET", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.SetNX(ctx, k("nx"), "a", 0).Result())(true); err != nil {
				return err
			}
			if err := want(r.SetEx(ctx, k("ex"), "b", 50*time.Second).Result())("OK"); err != nil {
				return err
			}
			if err := want(r.Do(ctx, "PSETEX", k("px"), 50000, "c").Text())("OK"); err != nil {
				return err
			}
			pttl, err := r.PTTL(ctx, k("px")).Result()
			if err != nil || pttl <= 0 || pttl > 50*time.Second {
				return fmt.Errorf("PTTL %v %v", pttl, err)
			}
			if err := want(r.GetSet(ctx, k("nx"), "a2").Result())("a"); err != nil {
				return err
			}
			return wantNil(r.GetSet(ctx, k("gs-new"), "z").Err())
		}},
		{"GETDEL GETEX", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.GetDel(ctx, k("nx")).Result())("a2"); err != nil {
				return err
			}
			if err := wantNil(r.Get(ctx, k("nx")).Err()); err != nil {
				return err
			}
			if err := wantNil(r.GetDel(ctx, k("nx")).Err()); err != nil {
				return err
			}
			if err := want(r.GetEx(ctx, k("ex"), 0).Result())("b"); err != nil {
				return err
			}
			if err := want(r.Do(ctx, "GETEX", k("ex"), "PERSIST").Text())("b"); err != nil {
				return err
			}
			if err := want(r.TTL(ctx, k("ex")).Result())(time.Duration(-1)); err != nil {
				return err
			}
			if err := want(r.GetEx(ctx, k("ex"), 30*time.Second).Result())("b"); err != nil {
				return err
			}
			ttl, err := r.TTL(ctx, k("ex")).Result()
			if err != nil || ttl <= 0 || ttl > 30*time.Second {
				return fmt.Errorf("TTL after GETEX EX: %v %v", ttl, err)
			}
			return nil
		}},
		{"MSET MGET MSETNX", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.MSet(ctx, k("m1"), "1", k("m2"), "2", k("m3"), "3").Result())("OK"); err != nil {
				return err
			}
			got, err := r.MGet(ctx, k("m1"), k("nope"), k("m3"), k("m2"), k("m1")).Result()
			if err != nil {
				return err
			}
			if w := []any{"1", nil, "3", "2", "1"}; !slices.Equal(got, w) {
				return fmt.Errorf("MGET %v, want %v", got, w)
			}
			// MSETNX needs one slot in both modes.
			if err := want(r.MSetNX(ctx, "{nx}a"+k(""), "1", "{nx}b"+k(""), "2").Result())(true); err != nil {
				return err
			}
			if err := want(r.MSetNX(ctx, "{nx}b"+k(""), "3", "{nx}c"+k(""), "4").Result())(false); err != nil {
				return err
			}
			return wantNil(r.Get(ctx, "{nx}c"+k("")).Err())
		}},
		{"DEL UNLINK EXISTS", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.Exists(ctx, k("m1"), k("m1"), k("m2"), k("nope")).Result())(int64(3)); err != nil {
				return err
			}
			if err := want(r.Del(ctx, k("m1"), k("m2"), k("nope")).Result())(int64(2)); err != nil {
				return err
			}
			if err := want(r.Unlink(ctx, k("m3"), k("m1")).Result())(int64(1)); err != nil {
				return err
			}
			return want(r.Exists(ctx, k("m1"), k("m2"), k("m3")).Result())(int64(0))
		}},
		{"INCR DECR INCRBY DECRBY", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.Incr(ctx, k("n")).Result())(int64(1)); err != nil {
				return err
			}
			if err := want(r.IncrBy(ctx, k("n"), 41).Result())(int64(42)); err != nil {
				return err
			}
			if err := want(r.Decr(ctx, k("n")).Result())(int64(41)); err != nil {
				return err
			}
			if err := want(r.DecrBy(ctx, k("n"), 50).Result())(int64(-9)); err != nil {
				return err
			}
			if err := wantErr(r.Incr(ctx, k("s")).Err(), "ERR value is not an integer or out of range"); err != nil {
				return err
			}
			if err := want(r.Set(ctx, k("big"), "9223372036854775807", 0).Result())("OK"); err != nil {
				return err
			}
			return wantErr(r.Incr(ctx, k("big")).Err(), "ERR increment or decrement would overflow")
		}},
		{"APPEND STRLEN", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.Append(ctx, k("ap"), "abc").Result())(int64(3)); err != nil {
				return err
			}
			if err := want(r.Append(ctx, k("ap"), "de").Result())(int64(5)); err != nil {
				return err
			}
			if err := want(r.StrLen(ctx, k("ap")).Result())(int64(5)); err != nil {
				return err
			}
			return want(r.StrLen(ctx, k("nope")).Result())(int64(0))
		}},
		{"EXPIRE PEXPIRE EXPIREAT TTL PTTL PERSIST TYPE", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.TTL(ctx, k("ap")).Result())(time.Duration(-1)); err != nil {
				return err
			}
			if err := want(r.TTL(ctx, k("nope")).Result())(time.Duration(-2)); err != nil {
				return err
			}
			if err := want(r.Expire(ctx, k("nope"), time.Minute).Result())(false); err != nil {
				return err
			}
			if err := want(r.ExpireXX(ctx, k("ap"), time.Minute).Result())(false); err != nil {
				return err
			}
			if err := want(r.ExpireNX(ctx, k("ap"), time.Minute).Result())(true); err != nil {
				return err
			}
			if err := want(r.ExpireGT(ctx, k("ap"), 30*time.Second).Result())(false); err != nil {
				return err
			}
			if err := want(r.ExpireLT(ctx, k("ap"), 30*time.Second).Result())(true); err != nil {
				return err
			}
			if err := want(r.PExpire(ctx, k("ap"), 90*time.Second).Result())(true); err != nil {
				return err
			}
			pttl, err := r.PTTL(ctx, k("ap")).Result()
			if err != nil || pttl <= 30*time.Second || pttl > 90*time.Second {
				return fmt.Errorf("PTTL after PEXPIRE 90s: %v %v", pttl, err)
			}
			at := time.Now().Add(time.Hour).Truncate(time.Second)
			if err := want(r.ExpireAt(ctx, k("ap"), at).Result())(true); err != nil {
				return err
			}
			if err := want(r.ExpireTime(ctx, k("ap")).Result())(time.Duration(at.Unix()) * time.Second); err != nil {
				return err
			}
			if err := want(r.Persist(ctx, k("ap")).Result())(true); err != nil {
				return err
			}
			if err := want(r.Persist(ctx, k("ap")).Result())(false); err != nil {
				return err
			}
			if err := want(r.Type(ctx, k("ap")).Result())("string"); err != nil {
				return err
			}
			return want(r.Type(ctx, k("nope")).Result())("none")
		}},
		{"expiry hides the key", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := want(r.Set(ctx, k("short"), "x", 50*time.Millisecond).Result())("OK"); err != nil {
				return err
			}
			if err := want(r.Set(ctx, k("past"), "x", 0).Result())("OK"); err != nil {
				return err
			}
			// A time already past deletes the key at once.
			if err := want(r.ExpireAt(ctx, k("past"), time.Unix(1, 0)).Result())(true); err != nil {
				return err
			}
			if err := wantNil(r.Get(ctx, k("past")).Err()); err != nil {
				return err
			}
			for deadline := time.Now().Add(20 * time.Second); ; {
				err := r.Get(ctx, k("short")).Err()
				if errors.Is(err, redis.Nil) {
					break
				}
				if err != nil {
					return err
				}
				if time.Now().After(deadline) {
					return errors.New("a key set with PX 50 is still there after 20s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			return want(r.Exists(ctx, k("short")).Result())(int64(0))
		}},
		{"SCAN KEYS DBSIZE", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			for i := range 25 {
				if err := r.Set(ctx, k(fmt.Sprintf("scan:%02d", i)), "v", 0).Err(); err != nil {
					return err
				}
			}
			pattern := k("scan:*")
			var got []string
			each := func(fn func(c redis.UniversalClient) error) error {
				if cc, ok := r.(*redis.ClusterClient); ok {
					var mu sync.Mutex
					return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
						mu.Lock()
						defer mu.Unlock()
						return fn(c)
					})
				}
				return fn(r)
			}
			err := each(func(c redis.UniversalClient) error {
				var cursor uint64
				for {
					keys, next, err := c.Scan(ctx, cursor, pattern, 7).Result()
					if err != nil {
						return err
					}
					got = append(got, keys...)
					if cursor = next; cursor == 0 {
						return nil
					}
				}
			})
			if err != nil {
				return err
			}
			if len(got) != 25 {
				return fmt.Errorf("SCAN MATCH %s found %d keys, want 25: %q", pattern, len(got), got)
			}
			var keys []string
			if err := each(func(c redis.UniversalClient) error {
				ks, err := c.Keys(ctx, pattern).Result()
				keys = append(keys, ks...)
				return err
			}); err != nil {
				return err
			}
			slices.Sort(got)
			slices.Sort(keys)
			if !slices.Equal(got, keys) {
				return fmt.Errorf("KEYS %q, SCAN %q", keys, got)
			}
			n, err := r.DBSize(ctx).Result()
			if err != nil || n < 25 {
				return fmt.Errorf("DBSIZE %d, %v", n, err)
			}
			return nil
		}},
		{"INFO COMMAND CONFIG", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			info, err := r.Info(ctx, "server", "keyspace").Result()
			if err != nil || !strings.Contains(info, "redis_version:") || !strings.Contains(info, "# Keyspace") {
				return fmt.Errorf("INFO %q, %v", info, err)
			}
			cmds, err := r.Command(ctx).Result()
			if err != nil {
				return err
			}
			get := cmds["get"]
			if get == nil || get.Arity != 2 || get.FirstKeyPos != 1 || !slices.Contains(get.Flags, "readonly") {
				return fmt.Errorf("COMMAND: get is %+v", get)
			}
			n, err := r.Do(ctx, "COMMAND", "COUNT").Int()
			if err != nil || n != len(cmds) {
				return fmt.Errorf("COMMAND COUNT %d, %v; COMMAND listed %d", n, err, len(cmds))
			}
			cfg, err := r.ConfigGet(ctx, "save").Result()
			if err != nil || len(cfg) != 1 {
				return fmt.Errorf("CONFIG GET save %v, %v", cfg, err)
			}
			return nil
		}},
		{"unknown command and wrong arity", func(ctx context.Context, r redis.UniversalClient, k func(string) string) error {
			if err := wantErr(r.Do(ctx, "NOSUCH", k("x")).Err(), "ERR unknown command 'NOSUCH'"); err != nil {
				return err
			}
			return wantErr(r.Do(ctx, "GET", k("x"), "extra").Err(), "ERR wrong number of arguments for 'get' command")
		}},
	}
}

func runCommandList(t *testing.T, rdb redis.UniversalClient, k func(string) string) {
	for _, st := range commandList() {
		t.Run(st.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := st.run(ctx, rdb, k); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRedisClients runs the command list through go-redis against the
// router (a plain client, RESP2 and RESP3) and against the storage nodes
// (a ClusterClient), then checks tokens, FLUSHALL and bad input.
func TestRedisClients(t *testing.T) {
	t.Parallel()
	s := startRedisStack(t)
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("proxy RESP%d", proto), func(t *testing.T) {
			rdb := s.proxyClient(t, proto, redisData)
			runCommandList(t, rdb, func(n string) string { return fmt.Sprintf("p%d:%s", proto, n) })
		})
	}
	t.Run("cluster", func(t *testing.T) {
		rdb := s.clusterClient(t, redisData)
		runCommandList(t, rdb, func(n string) string { return "{c}" + n })
		// The nodes answer CLUSTER SLOTS from the topology, with the RESP
		// addresses slotkvctl bootstrap took from the nodes.
		slots, err := rdb.ClusterSlots(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		var addrs []string
		total := 0
		for _, sl := range slots {
			total += sl.End - sl.Start + 1
			addrs = append(addrs, sl.Nodes[0].Addr)
		}
		if total != slot.Count {
			t.Fatalf("CLUSTER SLOTS covers %d slots: %+v", total, slots)
		}
		for _, a := range s.nodeRESP() {
			if !slices.Contains(addrs, a) {
				t.Fatalf("CLUSTER SLOTS %v lacks node %s", addrs, a)
			}
		}
		// A plain client on one node is sent to the owner.
		one := redis.NewClient(&redis.Options{Addr: s.nodeRESP()[0], Password: redisData})
		defer one.Close()
		key := keyInSlotRange(16000, 16383)
		if err := wantErr(one.Get(context.Background(), key).Err(), fmt.Sprintf("MOVED %d %s", slot.OfString(key), s.nodeRESP()[2])); err != nil {
			t.Fatal(err)
		}
		if err := wantErr(one.MGet(context.Background(), "a", "b").Err(), "CROSSSLOT Keys in request don't hash to the same slot"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("auth", func(t *testing.T) {
		ctx := context.Background()
		for name, addr := range map[string]string{"proxy": s.routerRESP, "node": s.nodeRESP()[0]} {
			t.Run(name, func(t *testing.T) {
				open := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2})
				defer open.Close()
				if err := wantErr(open.Get(ctx, "k").Err(), "NOAUTH Authentication required."); err != nil {
					t.Fatal(err)
				}
				wrong := redis.NewClient(&redis.Options{Addr: addr, Password: "wrong"})
				defer wrong.Close()
				if err := wantErr(wrong.Ping(ctx).Err(), "WRONGPASS"); err != nil {
					t.Fatal(err)
				}
			})
		}
		data := s.proxyClient(t, 3, redisData)
		if err := wantErr(data.FlushAll(ctx).Err(), "NOPERM"); err != nil {
			t.Fatal(err)
		}
		if n, err := data.DBSize(ctx).Result(); err != nil || n == 0 {
			t.Fatalf("DBSIZE after a refused FLUSHALL: %d %v", n, err)
		}
		admin := redis.NewClient(&redis.Options{Addr: s.routerRESP, Username: "default", Password: redisAdmin})
		defer admin.Close()
		if err := want(admin.FlushAll(ctx).Result())("OK"); err != nil {
			t.Fatal(err)
		}
		if err := want(data.DBSize(ctx).Result())(int64(0)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		ctx := context.Background()
		// One connection, so "the connection survives" is checked on the
		// same one.
		rdb := redis.NewClient(&redis.Options{Addr: s.routerRESP, Password: redisData, PoolSize: 1, MaxRetries: -1})
		defer rdb.Close()
		id := rdb.ClientID(ctx).Val()
		for _, tt := range []struct {
			name string
			args []any
			want string
		}{
			{"wrong arity", []any{"SET", "k"}, "ERR wrong number of arguments for 'set' command"},
			{"INCR of a string", []any{"INCRBY", "k", "ten"}, "ERR value is not an integer or out of range"},
			{"over-long key", []any{"SET", strings.Repeat("k", 16<<10+1), "v"}, "ERR key is 16385 bytes, above the limit of 16384"},
			{"over-long value", []any{"SET", "k", strings.Repeat("v", 4<<20+1)}, "ERR value is 4194305 bytes, above the limit of 4194304"},
			{"bad expiry", []any{"SET", "k", "v", "EX", "-1"}, "ERR invalid expire time in 'set' command"},
		} {
			if err := wantErr(rdb.Do(ctx, tt.args...).Err(), tt.want); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if got := rdb.ClientID(ctx).Val(); got != id {
				t.Fatalf("%s: the connection was replaced (client id %d, was %d)", tt.name, got, id)
			}
		}
		// A malformed frame: Redis's protocol error, then the server
		// closes the connection, as Redis does.
		for _, addr := range []string{s.routerRESP, s.nodeRESP()[0]} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "*1\r\n+PING\r\n")
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			rd := bufio.NewReader(c)
			line, err := rd.ReadString('\n')
			if line != "-ERR Protocol error: expected '$', got '+'\r\n" {
				t.Fatalf("malformed frame on %s: %q %v", addr, line, err)
			}
			if _, err := rd.ReadByte(); err == nil {
				t.Fatalf("%s kept the connection after a protocol error", addr)
			}
			c.Close()
		}
	})
}

// keyInSlotRange is a key whose slot is in [lo, hi].
func keyInSlotRange(lo, hi uint16) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("key-%d", i)
		if s := slot.OfString(k); s >= lo && s <= hi {
			return k
		}
	}
}

// TestRedisClusterMigration: a go-redis ClusterClient keeps reading and
// writing keys of slots 0-1000 while a migration moves them from n1 to n2;
// no error reaches the application (the client follows -MOVED and retries
// -TRYAGAIN by itself) and every acknowledged write is read back, from
// the new owner.
func TestRedisClusterMigration(t *testing.T) {
	t.Parallel()
	s := startRedisStack(t)
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: s.nodeRESP(), Password: redisData,
		// A hand-off pauses writes for a moment (-TRYAGAIN) and sends
		// clients to the new owner (-MOVED): room for both.
		MaxRedirects: 64, MaxRetries: 64, MinRetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 100 * time.Millisecond,
	})
	t.Cleanup(func() { _ = rdb.Close() })

	// Enough data in the moving slots for the job to take a while.
	var keys []string
	for i := 0; len(keys) < 64; i++ {
		k := fmt.Sprintf("w%d", i)
		if slot.OfString(k) <= 1000 {
			keys = append(keys, k)
		}
	}
	filler := 0
	for batch := 0; batch < 40; batch++ {
		var args []any
		for len(args) < 1000 {
			k := fmt.Sprintf("{f%d}", filler)
			filler++
			if slot.OfString(k) <= 1000 {
				args = append(args, k, strings.Repeat("x", 200))
			}
		}
		for i := 0; i < len(args); i += 2 {
			if err := rdb.Set(ctx, args[i].(string), args[i+1], 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}

	var (
		stop   atomic.Bool
		ops    atomic.Int64
		wg     sync.WaitGroup
		mu     sync.Mutex
		acked  = map[string]string{}
		counts = map[string]int64{}
		fail   = make(chan error, len(keys))
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				k := keys[(w+i*8)%len(keys)]
				v := fmt.Sprintf("%d-%d", w, i)
				// Writers own disjoint keys (w + multiples of 8), so the
				// last acknowledged value of a key is its value.
				if err := rdb.Set(ctx, k, v, 0).Err(); err != nil {
					fail <- fmt.Errorf("SET %s: %w", k, err)
					return
				}
				mu.Lock()
				acked[k] = v
				mu.Unlock()
				got, err := rdb.Get(ctx, k).Result()
				if err != nil || got != v {
					fail <- fmt.Errorf("GET %s right after SET %q: %q %v", k, v, got, err)
					return
				}
				// A counter in the same slot: INCR is an Update on the
				// owner, atomic there; each acknowledged one counts.
				ck := "{" + k + "}:n"
				n, err := rdb.Incr(ctx, ck).Result()
				if err != nil {
					fail <- fmt.Errorf("INCR %s: %w", ck, err)
					return
				}
				mu.Lock()
				prev := counts[ck]
				counts[ck] = n
				mu.Unlock()
				if n != prev+1 {
					fail <- fmt.Errorf("INCR %s answered %d after %d", ck, n, prev)
					return
				}
				ops.Add(1)
			}
		})
	}
	for ops.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
		if len(fail) > 0 {
			break
		}
	}
	m := startMover(t, s.cluster)
	// The mover's token: the admin token (startMover passes c.Token).
	m.begin(t, &migratorv1.StartMigrationRequest{JobId: "redis-move", Ranges: "0-1000",
		SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 2})
	job := m.wait(t, "redis-move", over)
	at := ops.Load()
	for ops.Load() < at+200 && len(fail) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Error(err)
	}
	if job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("migration %v: %s", job.GetPhase(), job.GetError())
	}
	t.Logf("%d client rounds through the migration; write pause %.1f ms", ops.Load(), job.GetWritePauseMs())
	// The nodes describe the new topology: slots 0-1000 on n2.
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(slots, func(r redis.ClusterSlot) bool {
		return r.Start == 0 && r.End == 1000 && r.Nodes[0].Addr == s.Nodes[1].Proc.RESP
	}) {
		t.Fatalf("CLUSTER SLOTS after the migration: %+v", slots)
	}
	// Every acknowledged write, read back through the cluster client and
	// straight from n2's RESP listener, which owns the slots now.
	n2 := redis.NewClient(&redis.Options{Addr: s.Nodes[1].Proc.RESP, Password: redisData})
	defer n2.Close()
	for k, n := range counts {
		acked[k] = fmt.Sprint(n)
	}
	for k, v := range acked {
		if got, err := rdb.Get(ctx, k).Result(); err != nil || got != v {
			t.Fatalf("GET %s: %q %v, want %q", k, got, err, v)
		}
		if got, err := n2.Get(ctx, k).Result(); err != nil || got != v {
			t.Fatalf("GET %s on n2: %q %v, want %q", k, got, err, v)
		}
	}
}

// TestRedisCLI drives redis-cli, a client nobody here wrote, against the
// router and (with -c, following -MOVED) against a storage node.
func TestRedisCLI(t *testing.T) {
	t.Parallel()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli is not installed (Debian: apt-get install redis-tools; make test and make bench-redis install it): skipping the redis-cli checks")
	}
	s := startRedisStack(t)
	run := func(addr string, args ...string) string {
		t.Helper()
		host, port, _ := net.SplitHostPort(addr)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, cli, append([]string{"-h", host, "-p", port, "--no-auth-warning", "-a", redisData}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tt := range []struct {
		addr string
		args []string
		want string
	}{
		{s.routerRESP, []string{"PING"}, "PONG"},
		{s.routerRESP, []string{"SET", "cli:a", "hello"}, "OK"},
		{s.routerRESP, []string{"GET", "cli:a"}, "hello"},
		{s.routerRESP, []string{"INCRBY", "cli:n", "5"}, "5"},
		{s.routerRESP, []string{"GET", "nope"}, ""},
		{s.routerRESP, []string{"INCR", "cli:a"}, "ERR value is not an integer or out of range"},
		// -c follows MOVED from whichever node it asked.
		{s.nodeRESP()[0], []string{"-c", "GET", "cli:a"}, "hello"},
		{s.nodeRESP()[2], []string{"-c", "SET", "cli:b", "x"}, "OK"},
		{s.routerRESP, []string{"GET", "cli:b"}, "x"},
	} {
		if got := run(tt.addr, tt.args...); got != tt.want {
			t.Fatalf("redis-cli %v: %q, want %q", tt.args, got, tt.want)
		}
	}
	if got := run(s.routerRESP, "--scan", "--pattern", "cli:*"); !slices.Equal(sortedLines(got), []string{"cli:a", "cli:b", "cli:n"}) {
		t.Fatalf("redis-cli --scan: %q", got)
	}
	if got := run(s.nodeRESP()[0], "CLUSTER", "INFO"); !strings.Contains(got, "cluster_state:ok") {
		t.Fatalf("CLUSTER INFO: %q", got)
	}
}

func sortedLines(s string) []string {
	l := strings.Split(s, "\n")
	slices.Sort(l)
	return l
}
