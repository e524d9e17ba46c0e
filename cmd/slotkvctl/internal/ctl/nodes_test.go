package ctl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// TestNodesCommand: `slotkvctl nodes`, given one seed address, shows every
// node of the topology with its health, keys, disk and slots, and a slot
// range in migration; a stopped node shows as UNREACHABLE and makes the
// command exit 1.
func TestNodesCommand(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 3, testcluster.Options{Token: "tok"})
	topo := c.Bootstrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1 := c.Node(t, "n1")
	req := &storagev1.BatchWriteRequest{}
	for i := 0; len(req.Mutations) < 50; i++ {
		if k := fmt.Sprint("nodes-", i); slot.OfString(k) <= 5460 { // n1's slots
			req.Mutations = append(req.Mutations, &storagev1.Mutation{Key: []byte(k), Value: []byte("v")})
		}
	}
	if _, err := n1.StorageClient().BatchWrite(ctx, req); err != nil {
		t.Fatal(err)
	}
	// A migration begun on n1 puts slots 0-100 in MIGRATING.
	if _, err := storagev1.NewMigrationServiceClient(n1.Conn).BeginMigration(ctx, &storagev1.BeginMigrationRequest{JobId: "job-7",
		Role: storagev1.MigrationRole_MIGRATION_ROLE_SOURCE, Ranges: []*clusterv1.SlotRange{{Start: 0, End: 100}},
		PeerNodeId: "n2", TopologyVersion: topo.Version()}); err != nil {
		t.Fatal(err)
	}
	lookup := env("SLOTKV_TOKEN", "tok")

	code, out, errOut := run(t, lookup, "nodes", "--storage", c.Nodes[2].Proc.GRPC)
	if code != 0 {
		t.Fatalf("nodes: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("nodes:\n%s", out)
	for _, want := range []string{"topology version 1, 3 nodes", "HEALTH", "0-100 MIGRATING peer n2 (job job-7)"} {
		if !strings.Contains(out, want) {
			t.Errorf("nodes output lacks %q:\n%s", want, out)
		}
	}
	for i, n := range c.Nodes {
		if !lineWith(out, n.ID, n.Proc.GRPC, "SERVING", []string{"0-5460", "5461-10922", "10923-16383"}[i]) {
			t.Errorf("no line for %s with its address, SERVING and its slots:\n%s", n.ID, out)
		}
	}

	code, out, _ = run(t, lookup, "nodes", "--json", "--storage", c.Nodes[0].Proc.GRPC)
	var got struct {
		TopologyVersion uint64 `json:"topology_version"`
		Nodes           []struct {
			ID         string   `json:"id"`
			Health     string   `json:"health"`
			Keys       uint64   `json:"keys"`
			Slots      int      `json:"slots"`
			SlotStates []string `json:"slot_states"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got.Nodes) != 3 {
		t.Fatalf("nodes --json: exit %d, %v:\n%s", code, err, out)
	}
	total := 0
	for _, n := range got.Nodes {
		total += n.Slots
		if n.Health != "SERVING" {
			t.Errorf("%s health %s", n.ID, n.Health)
		}
	}
	if n := got.Nodes[0]; n.ID != "n1" || n.Keys != 50 || len(n.SlotStates) != 1 {
		t.Errorf("n1 in JSON: %+v", n)
	}
	if total != 16384 {
		t.Errorf("nodes own %d slots in all, want 16384", total)
	}

	// A stopped node: still listed (from the topology), UNREACHABLE, exit 1.
	if err := c.Nodes[2].Proc.Stop(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, lookup, "nodes", "--storage", c.Nodes[0].Proc.GRPC)
	if code != 1 || !lineWith(out, "n3", "UNREACHABLE") || !strings.Contains(errOut, "node n3 is UNREACHABLE") {
		t.Errorf("nodes with n3 stopped: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}
