//go:build compose

package compose

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotkv/slotkv/pkg/slot"
)

// TestRedisCluster talks to the storage nodes' RESP listeners (cluster
// mode) the way a client inside the compose network does: go-redis's
// ClusterClient seeded with storage1:6379 learns the others from CLUSTER
// SLOTS, which must name every node by the address it advertises
// (storageN:6379), and a node asked for a key it does not own answers
// -MOVED with its owner's address. The test stack publishes those
// listeners on free host ports (deployments/compose/test.yml), and the
// client's dialer maps each advertised address to its port; on a TLS stack
// it checks the node certificate against the service name, as a client in
// the network would.
//
// (This file sorts before partition_test.go, so it runs before
// TestPartition takes storage2 off the network and back.)
func TestRedisCluster(t *testing.T) {
	s := newStack(t)
	published := map[string]string{}
	env := os.Getenv("SLOTKV_TEST_STORAGE_RESP")
	for _, kv := range strings.Split(env, ",") {
		if adv, hostport, ok := strings.Cut(kv, "="); ok && adv != "" && hostport != "" {
			published[adv] = hostport
		}
	}
	if len(published) != 3 {
		t.Fatalf("$SLOTKV_TEST_STORAGE_RESP = %q: want storageN:6379=host:port for the 3 nodes (make test-compose sets it)", env)
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		hostport, ok := published[addr]
		if !ok {
			return nil, fmt.Errorf("%s is not the advertised address of a node (those are %v)", addr, published)
		}
		d := &net.Dialer{Timeout: 5 * time.Second}
		if s.tls == nil {
			return d.DialContext(ctx, network, hostport)
		}
		conf := s.tls.Clone()
		conf.ServerName, _, _ = net.SplitHostPort(addr)
		return (&tls.Dialer{NetDialer: d, Config: conf}).DialContext(ctx, network, hostport)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"storage1:6379"}, Password: s.dataToken, Dialer: dial})
	t.Cleanup(func() { _ = rdb.Close() })

	// CLUSTER SLOTS: every slot, each range on a node named by its service.
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS on storage1:6379: %v", err)
	}
	covered := 0
	for _, r := range slots {
		if len(r.Nodes) == 0 {
			t.Fatalf("CLUSTER SLOTS range %d-%d has no node", r.Start, r.End)
		}
		if _, ok := published[r.Nodes[0].Addr]; !ok {
			t.Errorf("CLUSTER SLOTS range %d-%d on %q, want one of the nodes' service addresses %v", r.Start, r.End, r.Nodes[0].Addr, published)
		}
		covered += int(r.End - r.Start + 1)
	}
	if covered != slot.Count {
		t.Errorf("CLUSTER SLOTS covers %d slots, want %d: %+v", covered, slot.Count, slots)
	}
	ownerOf := func(sl int) string {
		for _, r := range slots {
			if int(r.Start) <= sl && sl <= int(r.End) {
				return r.Nodes[0].Addr
			}
		}
		return ""
	}

	// Keys on every node, through the cluster client's slot map.
	prefix := fmt.Sprintf("compose/rediscluster/%d/", time.Now().UnixNano())
	nodes := map[string]bool{}
	var notOnStorage1 string
	for i := 0; i < 64; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if err := rdb.Set(ctx, k, "v"+k, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		if got, err := rdb.Get(ctx, k).Result(); err != nil || got != "v"+k {
			t.Errorf("GET %s = %q, %v; want %q", k, got, err, "v"+k)
		}
		at := ownerOf(int(slot.OfString(k)))
		nodes[at] = true
		if at != "storage1:6379" && notOnStorage1 == "" {
			notOnStorage1 = k
		}
	}
	if len(nodes) != 3 {
		t.Errorf("64 keys landed on %v, want all 3 nodes", nodes)
	}

	// A node asked for another's key sends the client there by name.
	one := redis.NewClient(&redis.Options{Addr: "storage1:6379", Password: s.dataToken, Dialer: dial})
	t.Cleanup(func() { _ = one.Close() })
	sl := slot.OfString(notOnStorage1)
	want := fmt.Sprintf("MOVED %d %s", sl, ownerOf(int(sl)))
	if err := one.Get(ctx, notOnStorage1).Err(); err == nil || err.Error() != want {
		t.Errorf("GET %s (slot %d) on storage1:6379: %v, want %q", notOnStorage1, sl, err, want)
	}
}
