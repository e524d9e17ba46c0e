//go:build compose

package compose

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/e2e/robustness"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/proctest"
)

// TestPartition is the robustness suite's network fault, in the container
// stack: clients record get, put and delete histories through the router's
// published gRPC port while storage2 is cut off from the stack's network
// with `docker network disconnect` for a few seconds and then connected
// again (under its service name, as compose had it). Calls for storage2's
// slots fail or time out meanwhile (recorded as ambiguous writes and failed
// reads); once it is back every key must be readable, and porcupine must
// find the whole history linearizable.
func TestPartition(t *testing.T) {
	s := newStack(t)
	const victim, cut = "storage2", 6 * time.Second

	cc, err := dial.New(s.routerGRPC, dial.Options{Token: s.token, TLS: s.tls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	kv := routerv1.NewKVServiceClient(cc)
	h := robustness.NewHistory()
	keys := make([]string, 64) // spread over every node's slots
	for i := range keys {
		keys[i] = fmt.Sprintf("compose/partition/%d", i)
	}
	call := func(client int, in robustness.Input) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := h.Now()
		var out robustness.Output
		var err error
		switch in.Kind {
		case robustness.Put:
			_, err = kv.Put(ctx, &routerv1.PutRequest{Key: in.Key, Data: &routerv1.PutRequest_Text{Text: in.Value}})
		case robustness.Delete:
			_, err = kv.Delete(ctx, &routerv1.DeleteRequest{Key: in.Key})
		default:
			var resp *routerv1.GetResponse
			resp, err = kv.Get(ctx, &routerv1.GetRequest{Key: in.Key})
			switch {
			case status.Code(err) == codes.NotFound:
				err = nil
			case err == nil:
				out = robustness.Output{Found: true, Value: resp.GetText()}
			}
		}
		h.Record(client, in, start, out, err)
		return err
	}
	const clients = 4
	for _, k := range keys {
		if err := call(clients, robustness.Input{Kind: robustness.Put, Key: k, Value: k + "@init"}); err != nil {
			t.Fatalf("initial put %s: %v", k, err)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for id := range clients {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(id), 5))
			for i := 0; ctx.Err() == nil; i++ {
				in := robustness.Input{Key: keys[r.IntN(len(keys))]}
				switch p := r.IntN(100); {
				case p < 45:
					in.Kind = robustness.Get
				case p < 88:
					in.Kind, in.Value = robustness.Put, fmt.Sprintf("c%d-%d", id, i)
				default:
					in.Kind = robustness.Delete
				}
				if call(id, in) != nil {
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	for h.Stats().Ops < 300 {
		time.Sleep(10 * time.Millisecond)
	}

	ids, err := s.run(t, s.compose[0], append(s.compose[1:], "ps", "-q", victim)...)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(ids))
	nets, err := s.run(t, "docker", "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", id)
	if err != nil || len(strings.Fields(string(nets))) != 1 {
		t.Fatalf("networks of %s (%s): %q %v, want one", victim, id, nets, err)
	}
	network := strings.Fields(string(nets))[0]
	before := h.Stats()
	t.Logf("disconnecting %s (%s) from %s for %s", victim, id[:12], network, cut)
	if _, err := s.run(t, "docker", "network", "disconnect", network, id); err != nil {
		t.Fatal(err)
	}
	reconnected := false
	reconnect := func() {
		if reconnected {
			return
		}
		reconnected = true
		// Under its service name again: the topology addresses it by it.
		if _, err := s.run(t, "docker", "network", "connect", "--alias", victim, network, id); err != nil {
			t.Errorf("reconnect %s: %v", victim, err)
		}
	}
	t.Cleanup(reconnect) // the stack's teardown needs it back
	time.Sleep(cut)
	during := h.Stats()
	reconnect()
	t.Logf("reconnected %s; during the cut: %d ambiguous writes, %d failed reads",
		victim, during.Ambiguous-before.Ambiguous, during.FailedReads-before.FailedReads)
	if during.Ambiguous+during.FailedReads == before.Ambiguous+before.FailedReads {
		t.Errorf("no call failed while %s was cut off: the cut did not cut", victim)
	}
	time.Sleep(3 * time.Second) // the clients go on with storage2 back
	stop()
	wg.Wait()

	// Every key readable again, each read recorded: the end of the history.
	for _, k := range keys {
		deadline := time.Now().Add(time.Minute)
		for call(clients, robustness.Input{Kind: robustness.Get, Key: k}) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("key %s not readable a minute after %s was reconnected", k, victim)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	root, err := proctest.WorkspaceRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".data", "robustness")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := h.Check(2*time.Minute, filepath.Join(dir, "compose-partition.html"))
	if err != nil {
		t.Error(err)
	}
	t.Logf("compose-partition: %d ops, %d ambiguous, %d failed reads, linearizable: %s", res.Ops, res.Ambiguous, res.FailedReads, res.Verdict)
	if !res.Linearizable() {
		t.Errorf("history of %d operations is %s, not linearizable; visualization: %s", res.Ops, res.Verdict, res.Visualization)
	}
}
