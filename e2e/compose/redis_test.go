//go:build compose

package compose

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedis talks to the router's published RESP port (proxy mode) with
// go-redis as a plain, non-cluster client: AUTH with the data token when
// the stack has tokens (NOAUTH before), SET, GET, INCR and an MGET across
// nodes, and a key written over RESP read back over REST. On a TLS stack
// the RESP port is TLS too, and the client uses the client certificate.
// The storage nodes' RESP listeners are inside the network only; the
// topology carries the addresses they advertise (their service names),
// which is what their -MOVED and CLUSTER SLOTS answers name.
func TestRedis(t *testing.T) {
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := func(password string) *redis.Client {
		rdb := redis.NewClient(&redis.Options{Addr: s.routerRESP, Password: password, TLSConfig: s.tls})
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}

	if s.dataToken != "" {
		if err := client("").Get(ctx, "compose/redis/noauth").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
			t.Errorf("GET without AUTH: %v, want NOAUTH", err)
		}
	}
	rdb := client(s.dataToken)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING %s: %v", s.routerRESP, err)
	}

	prefix := fmt.Sprintf("compose/redis/%d/", time.Now().UnixNano())
	key, counter := prefix+"greeting", prefix+"counter"
	if err := rdb.Set(ctx, key, "world", 0).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	if got, err := rdb.Get(ctx, key).Result(); err != nil || got != "world" {
		t.Errorf("GET %s = %q, %v; want world", key, got, err)
	}
	for i := int64(1); i <= 3; i++ {
		if got, err := rdb.Incr(ctx, counter).Result(); err != nil || got != i {
			t.Errorf("INCR %s = %d, %v; want %d", counter, got, err, i)
		}
	}

	// Keys of many slots, so of every node: MSET and MGET fan out.
	var keys []string
	var pairs []any
	for i := range 32 {
		k := fmt.Sprintf("%sm%d", prefix, i)
		keys = append(keys, k)
		pairs = append(pairs, k, "v"+k)
	}
	if err := rdb.MSet(ctx, pairs...).Err(); err != nil {
		t.Fatalf("MSET of %d keys: %v", len(keys), err)
	}
	vals, err := rdb.MGet(ctx, append(keys, prefix+"absent", counter)...).Result()
	if err != nil {
		t.Fatalf("MGET: %v", err)
	}
	for i, k := range keys {
		if vals[i] != "v"+k {
			t.Errorf("MGET %s = %v, want %q", k, vals[i], "v"+k)
		}
	}
	if v := vals[len(keys)]; v != nil {
		t.Errorf("MGET of an absent key = %v, want nil", v)
	}
	if v := vals[len(keys)+1]; v != "3" {
		t.Errorf("MGET %s = %v, want \"3\"", counter, v)
	}

	// The same store behind both APIs.
	var got kvEntry
	s.mustCall(t, http.MethodGet, s.routerHTTP, "/v1/kv/"+key, nil, &got)
	if got.Text != "world" {
		t.Errorf("REST GET of the key set over RESP = %+v, want text world", got)
	}

	// Bootstrap ran after the nodes served RESP: each one's advertised
	// address is in the topology.
	top := s.topology(t)
	var resp []string
	for _, n := range top.Nodes {
		resp = append(resp, n.ID+"="+n.RESPAddress)
	}
	slices.Sort(resp)
	if want := []string{"n1=storage1:6379", "n2=storage2:6379", "n3=storage3:6379"}; !slices.Equal(resp, want) {
		t.Errorf("topology version %s: nodes' RESP addresses %q, want %q", top.Version, resp, want)
	}
}
