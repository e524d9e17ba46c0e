//go:build compose

package compose

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMembers are the stack's etcd services (docker-compose.yml), each a
// member of the same name.
var etcdMembers = []string{"etcd1", "etcd2", "etcd3"}

// TestEtcd checks the stack's 3-member etcd cluster through the members'
// published client ports: three started members that advertise their
// service names, and quorum at work: with the leader killed (`docker
// kill`), the two others elect a new one and take writes and linearizable
// reads; started again, the killed member rejoins from its volume, catches
// up on the write it missed (read from its own copy) and sees the same
// leader as the others. The member is started again in t.Cleanup too, and
// the test waits for it to be healthy, so later tests find three.
func TestEtcd(t *testing.T) {
	s := newStack(t)
	clients := map[string]*clientv3.Client{}
	for _, m := range etcdMembers {
		clients[m] = s.etcdClient(t, m)
	}

	var leader string
	var leaderID uint64
	waitFor(t, "three started members with one leader", time.Minute, func() (bool, string, error) {
		var err error
		leader, leaderID, err = checkEtcdMembers(clients)
		return err == nil, leader, err
	})
	t.Logf("members %v started, leader %s", etcdMembers, leader)

	key := fmt.Sprintf("compose/etcd/%d", time.Now().UnixNano())
	if err := etcdPut(clients[leader], key, "before"); err != nil {
		t.Fatalf("put %s through %s: %v", key, leader, err)
	}

	id := s.containerID(t, leader)
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		if _, err := s.run(t, "docker", "start", id); err != nil {
			t.Errorf("docker start %s (%s): %v", leader, id, err)
			return
		}
		s.waitHealthy(t, leader, id)
	}
	t.Cleanup(start) // the later tests and the teardown need all three
	t.Logf("killing %s (%s), the leader", leader, id[:12])
	if _, err := s.run(t, "docker", "kill", id); err != nil {
		t.Fatal(err)
	}
	if _, err := etcdGet(clients[leader], key, false); err == nil {
		t.Fatalf("get %s through the killed %s succeeded: the kill did not kill", key, leader)
	}

	// The two others: a new leader among them, and each takes a write and
	// a linearizable read (both need the quorum) through its own endpoint.
	rest := slices.DeleteFunc(slices.Clone(etcdMembers), func(m string) bool { return m == leader })
	for _, m := range rest {
		value := "while-" + leader + "-down-via-" + m
		waitFor(t, "put through "+m+" with "+leader+" down", time.Minute, func() (bool, string, error) {
			if err := etcdPut(clients[m], key, value); err != nil {
				return false, "", err
			}
			got, err := etcdGet(clients[m], key, false)
			return err == nil && got == value, got, err
		})
		st, err := etcdStatus(clients[m])
		if err != nil {
			t.Fatalf("status of %s: %v", m, err)
		}
		if st.Leader == 0 || st.Leader == leaderID {
			t.Fatalf("%s sees leader %x with %s (the old leader) down", m, st.Leader, leader)
		}
	}
	last := "while-" + leader + "-down-via-" + rest[len(rest)-1]

	start()
	// Its published port may have changed (a free port, picked anew at
	// each start): dial it again.
	clients[leader] = s.etcdClient(t, leader)
	waitFor(t, leader+" rejoined", time.Minute, func() (bool, string, error) {
		if _, _, err := checkEtcdMembers(clients); err != nil {
			return false, "", err
		}
		// Serializable: its own copy, so the write it missed has reached it.
		got, err := etcdGet(clients[leader], key, true)
		return err == nil && got == last, got, err
	})
	if err := etcdPut(clients[leader], key, "after"); err != nil {
		t.Fatalf("put %s through the restarted %s: %v", key, leader, err)
	}
	for _, m := range etcdMembers {
		if got, err := etcdGet(clients[m], key, false); err != nil || got != "after" {
			t.Errorf("get %s through %s = %q, %v; want %q", key, m, got, err, "after")
		}
	}
}

// checkEtcdMembers checks, through every member, that the member list
// holds the three started members (a name, the service name's peer and
// client URLs, no learner) and that every member sees the same leader,
// whose name and id it returns.
func checkEtcdMembers(clients map[string]*clientv3.Client) (string, uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var leader uint64
	names := map[uint64]string{}
	for _, m := range etcdMembers {
		resp, err := clients[m].MemberList(ctx)
		if err != nil {
			return "", 0, fmt.Errorf("member list through %s: %w", m, err)
		}
		var got []string
		for _, mem := range resp.Members {
			want := []string{"http://" + mem.Name + ":2380", "http://" + mem.Name + ":2379"}
			if mem.Name == "" || mem.IsLearner || !slices.Equal(mem.PeerURLs, want[:1]) || !slices.Equal(mem.ClientURLs, want[1:]) {
				return "", 0, fmt.Errorf("member list through %s: member %x (%q) is not a started voting member advertising its service name: peer %v, client %v", m, mem.ID, mem.Name, mem.PeerURLs, mem.ClientURLs)
			}
			got = append(got, mem.Name)
			names[mem.ID] = mem.Name
		}
		slices.Sort(got)
		if !slices.Equal(got, etcdMembers) {
			return "", 0, fmt.Errorf("member list through %s: %v, want %v", m, got, etcdMembers)
		}
		st, err := etcdStatus(clients[m])
		if err != nil {
			return "", 0, fmt.Errorf("status of %s: %w", m, err)
		}
		if len(st.Errors) > 0 {
			return "", 0, fmt.Errorf("status of %s: errors %v", m, st.Errors)
		}
		if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
			return "", 0, fmt.Errorf("%s sees leader %x, another member %x", m, st.Leader, leader)
		}
		leader = st.Leader
	}
	return names[leader], leader, nil
}

// etcdClient is a client of one member only (its published client port,
// found with `compose port`), closed at the end of the test.
func (s *stack) etcdClient(t *testing.T, member string) *clientv3.Client {
	t.Helper()
	out, err := s.run(t, s.compose[0], append(s.compose[1:], "port", member, "2379")...)
	hostport := strings.TrimSpace(string(out))
	if err != nil || hostport == "" {
		t.Fatalf("%s port %s 2379: %q %v", strings.Join(s.compose, " "), member, hostport, err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{hostport},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(), // its retries while a member is down are expected
	})
	if err != nil {
		t.Fatalf("etcd client of %s (%s): %v", member, hostport, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// containerID is the id of service's container in the stack.
func (s *stack) containerID(t *testing.T, service string) string {
	t.Helper()
	out, err := s.run(t, s.compose[0], append(s.compose[1:], "ps", "-q", service)...)
	id := strings.TrimSpace(string(out))
	if err != nil || len(id) < 12 || strings.ContainsAny(id, "\n ") {
		t.Fatalf("container of %s: %q %v, want one", service, id, err)
	}
	return id
}

// waitHealthy waits until Docker reports the container healthy (its
// compose health check), as test.sh does for the whole stack.
func (s *stack) waitHealthy(t *testing.T, service, id string) {
	t.Helper()
	waitFor(t, service+" healthy", 2*time.Minute, func() (bool, string, error) {
		out, err := s.run(t, "docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", id)
		st := strings.TrimSpace(string(out))
		return err == nil && st == "running healthy", st, err
	})
}

func etcdStatus(c *clientv3.Client) (*clientv3.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Status(ctx, c.Endpoints()[0])
}

func etcdPut(c *clientv3.Client, key, value string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Put(ctx, key, value)
	return err
}

// etcdGet reads key, linearizably (through the quorum) unless serializable
// (the member's own copy).
func etcdGet(c *clientv3.Client, key string, serializable bool) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := c.Get(ctx, key, opts...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) != 1 {
		return "", fmt.Errorf("get %s: %d keys", key, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value), nil
}
