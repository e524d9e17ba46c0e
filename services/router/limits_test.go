package router_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/services/router"
)

// TestSizeLimitsBeforeForwarding sends keys and values just over the
// shared limits (pkg/limits, the storage node's defaults): the router
// refuses each with InvalidArgument naming the field and the limit, and no
// storage call is made. Values at the limit still go through.
func TestSizeLimitsBeforeForwarding(t *testing.T) {
	t.Parallel()
	c, _, r := setup(t, 1, router.Options{})
	node := c.Nodes[0]
	bigKey := strings.Repeat("k", limits.DefaultMaxKeyBytes+1)
	bigValue := strings.Repeat("v", limits.DefaultMaxValueBytes+1)
	keyLimit := fmt.Sprintf("--max-key-bytes=%d", limits.DefaultMaxKeyBytes)
	valueLimit := fmt.Sprintf("--max-value-bytes=%d", limits.DefaultMaxValueBytes)

	tests := []struct {
		name      string
		call      func() error
		wantField string
		wantLimit string
	}{
		{"put text", func() error {
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: "a", Data: &routerv1.PutRequest_Text{Text: bigValue}})
			return err
		}, "text", valueLimit},
		{"put bytes", func() error {
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: "a", Data: &routerv1.PutRequest_Value{Value: []byte(bigValue)}})
			return err
		}, "value", valueLimit},
		{"put key", func() error {
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: bigKey, Data: &routerv1.PutRequest_Text{Text: "x"}})
			return err
		}, "key", keyLimit},
		{"get key", func() error {
			_, err := r.KV.Get(ctxT(t), &routerv1.GetRequest{Key: bigKey})
			return err
		}, "key", keyLimit},
		{"delete key", func() error {
			_, err := r.KV.Delete(ctxT(t), &routerv1.DeleteRequest{Key: bigKey})
			return err
		}, "key", keyLimit},
		{"multi-get key", func() error {
			_, err := r.KV.MultiGet(ctxT(t), &routerv1.MultiGetRequest{Keys: []string{"a", bigKey}})
			return err
		}, "keys[1]", keyLimit},
		{"multi-put key", func() error {
			_, err := r.KV.MultiPut(ctxT(t), &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV(bigKey, "x")}})
			return err
		}, "entries[0].key", keyLimit},
		{"multi-put text", func() error {
			_, err := r.KV.MultiPut(ctxT(t), &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV("a", "x"), textKV("b", bigValue)}})
			return err
		}, "entries[1].text", valueLimit},
		{"multi-put bytes", func() error {
			_, err := r.KV.MultiPut(ctxT(t), &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{
				{Key: "a", Data: &routerv1.KeyValue_Value{Value: []byte(bigValue)}},
			}})
			return err
		}, "entries[0].value", valueLimit},
		{"multi-delete key", func() error {
			_, err := r.KV.MultiDelete(ctxT(t), &routerv1.MultiDeleteRequest{Keys: []string{"a", "b", bigKey}})
			return err
		}, "keys[2]", keyLimit},
	}
	// Subtests run in sequence: the storage call counts are compared
	// around each.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := storageCalls(t, node)
			err := tt.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if f := badField(err); f != tt.wantField {
				t.Errorf("field violation on %q, want %q (%v)", f, tt.wantField, err)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.wantField) || !strings.Contains(msg, tt.wantLimit) {
				t.Errorf("message %q does not name %q and %q", msg, tt.wantField, tt.wantLimit)
			}
			if after := storageCalls(t, node); after != before {
				t.Errorf("storage node got %d data calls for a refused request, want 0", after-before)
			}
		})
	}

	t.Run("at the limits", func(t *testing.T) {
		key := strings.Repeat("k", limits.DefaultMaxKeyBytes)
		value := bigValue[:limits.DefaultMaxValueBytes]
		if _, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: key, Data: &routerv1.PutRequest_Text{Text: value}}); err != nil {
			t.Fatalf("Put of a %d-byte key and %d-byte value: %v", len(key), len(value), err)
		}
		got, err := r.KV.Get(ctxT(t), &routerv1.GetRequest{Key: key}, grpc.MaxCallRecvMsgSize(8<<20))
		if err != nil || len(got.GetText()) != len(value) {
			t.Fatalf("Get = %d bytes, %v; want %d bytes", len(got.GetText()), err, len(value))
		}
	})
}

// TestConfiguredSizeLimits: router.Options raises or lowers the limits
// (to follow storage nodes started with other --max-key-bytes and
// --max-value-bytes).
func TestConfiguredSizeLimits(t *testing.T) {
	t.Parallel()
	_, _, r := setup(t, 1, router.Options{MaxKeyBytes: 8, MaxValueBytes: 16})
	tests := []struct {
		name      string
		key, text string
		wantField string // "" = accepted
	}{
		{"both at the limits", "12345678", "0123456789abcdef", ""},
		{"key over", "123456789", "x", "key"},
		{"value over", "k", "0123456789abcdefg", "text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: tt.key, Data: &routerv1.PutRequest_Text{Text: tt.text}})
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Put: %v", err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || badField(err) != tt.wantField {
				t.Fatalf("Put = %v, want InvalidArgument on %q", err, tt.wantField)
			}
		})
	}
}

// storageCalls sums the data calls node n has served.
func storageCalls(t *testing.T, n *testcluster.Node) uint64 {
	t.Helper()
	var sum uint64
	for _, m := range []string{"Get", "Put", "Delete", "BatchGet", "BatchWrite"} {
		sum += rpcCount(t, n, m)
	}
	return sum
}
