//go:build compose

package compose

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// migrators are the stack's migrator replicas (docker-compose.yml), by
// the gRPC address each advertises in the election.
var migrators = map[string]string{"migrator:7020": "migrator", "migrator2:7020": "migrator2"}

// TestMigratorFailover: the stack runs two migrator replicas that elect a
// leader in etcd. The leader is killed (`docker kill`); a migration asked
// of the survivor, through its own published port, is run by it once it
// leads, and succeeds; the keys of the moved slots read back through the
// router. The killed replica is started again and rejoins as a follower
// that answers reads.
func TestMigratorFailover(t *testing.T) {
	s := newStack(t)
	cli := s.etcdClient(t, "etcd1")
	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, "/slotkv/election/migrator/", clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			return ""
		}
		return migrators[string(resp.Kvs[0].Value)]
	}
	var first string
	waitFor(t, "a migrator leader", time.Minute, func() (bool, string, error) {
		first = leader()
		return first != "", first, nil
	})
	survivor, survivorHTTP := "migrator2", s.migrator2HTTP
	if first == "migrator2" {
		survivor, survivorHTTP = "migrator", s.migratorHTTP
	}
	id := s.containerID(t, first)
	t.Cleanup(func() {
		if _, err := s.run(t, "docker", "start", id); err != nil {
			t.Errorf("docker start %s: %v", first, err)
			return
		}
		s.waitHealthy(t, first, id)
	})
	t.Logf("killing %s (%s), the leader", first, id[:12])
	if _, err := s.run(t, "docker", "kill", id); err != nil {
		t.Fatalf("docker kill %s: %v", first, err)
	}

	// The last 50 slots of n3's last range go to n1.
	const source, destination = "n3", "n1"
	src := s.topology(t).rangesOf(source)
	if len(src) == 0 {
		t.Fatalf("%s owns no slots", source)
	}
	last := src[len(src)-1]
	move := slotRange{Start: max(last.Start, last.End-49), End: last.End}
	ranges := fmt.Sprintf("%d-%d", move.Start, move.End)
	keys := s.putKeysIn(t, "compose/failover", move, 200)

	// Asked of the survivor: it answers once it leads (the dead leader's
	// session lapses after its TTL) or an election is under way (503).
	type migration struct {
		ID    string `json:"id"`
		Phase string `json:"phase"`
		Error string `json:"error"`
	}
	var started struct {
		Migration migration `json:"migration"`
	}
	waitFor(t, "the migration started on "+survivor, time.Minute, func() (bool, string, error) {
		err := s.call(http.MethodPost, survivorHTTP, "/v1/migrations",
			map[string]any{"source_node_id": source, "destination_node_id": destination, "ranges": ranges}, &started)
		var apiErr *apiError
		if errors.As(err, &apiErr) && apiErr.status != http.StatusServiceUnavailable {
			t.Fatalf("start on %s: %v", survivor, err)
		}
		return err == nil, "", err
	})
	jobID := started.Migration.ID
	waitFor(t, "migration "+jobID, 2*time.Minute, func() (bool, string, error) {
		var got struct {
			Migration migration `json:"migration"`
		}
		if err := s.call(http.MethodGet, survivorHTTP, "/v1/migrations/"+jobID, nil, &got); err != nil {
			return false, "", err
		}
		switch got.Migration.Phase {
		case "PHASE_FAILED", "PHASE_CANCELED":
			t.Fatalf("migration %s ended %s: %s", jobID, got.Migration.Phase, got.Migration.Error)
		}
		return got.Migration.Phase == "PHASE_SUCCEEDED", got.Migration.Phase, nil
	})
	if l := leader(); l != survivor {
		t.Fatalf("leader after the kill is %q, want %s", l, survivor)
	}
	got := s.multiGet(t, keys)
	for _, k := range keys {
		if got[k] != "v-"+k {
			t.Errorf("key %s after the failover migration = %q, want %q", k, got[k], "v-"+k)
		}
	}
	if top := s.topology(t); !covers(top.rangesOf(destination), move) {
		t.Fatalf("topology version %s: %s has %v, want %s", top.Version, destination, top.rangesOf(destination), ranges)
	}

	// The killed replica comes back as a follower and answers reads of
	// the job its successor ran.
	if _, err := s.run(t, "docker", "start", id); err != nil {
		t.Fatalf("docker start %s: %v", first, err)
	}
	s.waitHealthy(t, first, id)
	firstHTTP := s.migratorHTTP
	if first == "migrator2" {
		firstHTTP = s.migrator2HTTP
	}
	// Its published port may change on a restart: ask compose again.
	service := first
	if out, err := s.run(t, s.compose[0], append(s.compose[1:], "port", service, "8070")...); err == nil && strings.TrimSpace(string(out)) != "" {
		firstHTTP = strings.TrimSpace(string(out))
	}
	var again struct {
		Migration migration `json:"migration"`
	}
	s.mustCall(t, http.MethodGet, firstHTTP, "/v1/migrations/"+jobID, nil, &again)
	if again.Migration.Phase != "PHASE_SUCCEEDED" {
		t.Fatalf("the restarted %s reads migration %s as %s", first, jobID, again.Migration.Phase)
	}
}
