package kv

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/fanout"
	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// opKind is the storage call a sub-request makes.
type opKind uint8

const (
	opGet   opKind = iota + 1 // BatchGet
	opWrite                   // BatchWrite
	opScan                    // Scan
	opCount                   // Count
)

func (k opKind) String() string {
	switch k {
	case opGet:
		return "multi-get"
	case opWrite:
		return "multi-write"
	case opScan:
		return "scan"
	case opCount:
		return "count"
	}
	return "op"
}

// subReq is the request type of every fan-out channel of the router, in
// both modes. The request of a whole call carries every key (keys, muts,
// slots) and, in topology mode, the grouping by node (groups); the Mapper
// turns it into one sub-request per partition with that partition's keys
// (idx are their positions in the call's keys) or slot ranges.
type subReq struct {
	kind opKind
	// Whole call.
	keys   [][]byte
	muts   []*storagev1.Mutation // opWrite, aligned with keys
	slots  []uint16              // slot of each key
	groups [][]int               // topology mode: positions per node index
	rename renamer               // names the caller's field of a position
	scan   *storagev1.ScanRequest
	// Sub-request (set by the Mapper).
	name   string // partition: node id or "N/M"
	idx    []int  // positions in the call's keys
	ranges []*clusterv1.SlotRange
}

// subResp is the answer type of every fan-out channel. A sub-answer holds
// one partition's part; the merged answer holds every sub-answer in parts.
type subResp struct {
	name  string
	idx   []int
	items []*storagev1.Item // opGet, aligned with idx
	scan  *storagev1.ScanResponse
	count uint64
	// retry is a retryable failure (SLOT_MOVED, frozen, node unavailable)
	// in topology mode: the keys of idx (or the whole call, for scans and
	// counts) are redone with the newest topology.
	retry error
	parts []*subResp
}

// mergeParts is the Merger of every channel: it collects the sub-answers;
// the caller puts them in request order.
func mergeParts(acc *subResp, _ int, sub *subResp) (*subResp, fanout.MergeResult) {
	if acc == nil {
		acc = &subResp{}
	}
	if sub != nil {
		acc.parts = append(acc.parts, sub)
	}
	return acc, fanout.MergeOK
}

// sub returns the sub-request of partition name for positions idx (nil for
// scans and counts) over ranges.
func (r *subReq) sub(name string, idx []int, ranges []*clusterv1.SlotRange) *subReq {
	s := &subReq{kind: r.kind, name: name, idx: idx, ranges: ranges, scan: r.scan}
	if r.kind == opGet || r.kind == opWrite {
		s.keys = make([][]byte, len(idx))
		for j, p := range idx {
			s.keys[j] = r.keys[p]
		}
		if r.kind == opWrite {
			s.muts = make([]*storagev1.Mutation, len(idx))
			for j, p := range idx {
				s.muts[j] = r.muts[p]
			}
		}
	}
	return s
}

// callStorage sends sub-request r to one storage node.
func callStorage(ctx context.Context, c storagev1.StorageServiceClient, r *subReq) (*subResp, error) {
	out := &subResp{name: r.name, idx: r.idx}
	switch r.kind {
	case opGet:
		resp, err := c.BatchGet(ctx, &storagev1.BatchGetRequest{Keys: r.keys})
		if err != nil {
			return nil, err
		}
		if len(resp.GetItems()) != len(r.keys) {
			return nil, status.Errorf(codes.Internal, "BatchGet answered %d items for %d keys", len(resp.GetItems()), len(r.keys))
		}
		out.items = resp.GetItems()
	case opWrite:
		if _, err := c.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: r.muts}); err != nil {
			return nil, err
		}
	case opScan:
		q := &storagev1.ScanRequest{
			Ranges: r.ranges, Prefix: r.scan.GetPrefix(), Start: r.scan.GetStart(),
			Limit: r.scan.GetLimit(), KeysOnly: r.scan.GetKeysOnly(),
		}
		resp, err := c.Scan(ctx, q)
		if err != nil {
			return nil, err
		}
		out.scan = resp
	case opCount:
		resp, err := c.Count(ctx, &storagev1.CountRequest{Ranges: r.ranges})
		if err != nil {
			return nil, err
		}
		out.count = resp.GetCount()
	default:
		return nil, status.Errorf(codes.Internal, "unknown operation %d", r.kind)
	}
	return out, nil
}

// subError is a sub-call's error with the positions of its keys, so a
// storage node's field violation ("keys[3]") can be renamed to the
// caller's field ("keys[17]").
type subError struct {
	err error // a status error
	idx []int
}

func (e *subError) Error() string              { return e.err.Error() }
func (e *subError) Unwrap() error              { return e.err }
func (e *subError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// failure is one partition a call could not reach.
type failure struct {
	partition string
	err       error
}

func (f failure) proto() *routerv1.PartitionFailure {
	st := status.Convert(statusOf(f.err))
	return &routerv1.PartitionFailure{Partition: f.partition, Code: codeName(st.Code()), Message: st.Message()}
}

// codeName is the canonical name of c, e.g. "UNAVAILABLE".
func codeName(c codes.Code) string {
	if n, ok := code.Code_name[int32(c)]; ok {
		return n
	}
	return c.String()
}

// statusOf finds the most telling gRPC status in err (which may be a tree
// of errors from the fan-out channels): Unavailable when a node was down,
// else the first status found, else one from a context error.
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	var found []*status.Status
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if gs, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			if st := gs.GRPCStatus(); st != nil && st.Code() != codes.OK && st.Code() != codes.Unknown {
				found = append(found, st)
				return
			}
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	for _, st := range found {
		if st.Code() == codes.Unavailable {
			return st.Err()
		}
	}
	if len(found) > 0 {
		return found[0].Err()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, fanout.ErrNoChannel):
		return status.Error(codes.Unavailable, err.Error())
	}
	return rpcerr.ToStatus(err)
}

// partitionsError is the error of a call that failed on some partitions:
// it names every failed partition. With one failure it keeps that
// failure's code and details (Unavailable for a node that is down, the
// storage node's InvalidArgument with its field renamed, ...). With
// several it keeps their code when they agree, else Unavailable when one
// partition was unreachable, else the first code, and carries an ErrorInfo
// (reason PARTITIONS_FAILED, metadata "partitions": comma-separated names).
func partitionsError(op opKind, failed []failure, rename renamer) error {
	slices.SortFunc(failed, func(a, b failure) int { return strings.Compare(a.partition, b.partition) })
	names := make([]string, len(failed))
	for i, f := range failed {
		names[i] = f.partition
	}
	sts := make([]*status.Status, len(failed))
	for i, f := range failed {
		st := status.Convert(statusOf(f.err))
		var se *subError
		if rename != nil && st.Code() == codes.InvalidArgument && errors.As(f.err, &se) {
			st = renameFields(st, se.idx, rename)
		}
		sts[i] = st
	}
	if len(failed) == 1 {
		p := sts[0].Proto()
		p.Message = fmt.Sprintf("%s failed on partition %s: %s", op, names[0], p.GetMessage())
		return status.FromProto(p).Err()
	}
	c := sts[0].Code()
	same := true
	for _, st := range sts[1:] {
		same = same && st.Code() == c
	}
	if !same {
		for _, st := range sts {
			if st.Code() == codes.Unavailable {
				c = codes.Unavailable
				break
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s failed on %d partitions (%s)", op, len(failed), strings.Join(names, ", "))
	for i, st := range sts {
		fmt.Fprintf(&b, "; %s: %s", names[i], st.Message())
	}
	st, err := status.New(c, b.String()).WithDetails(&errdetails.ErrorInfo{
		Reason: "PARTITIONS_FAILED", Domain: rpcerr.Domain,
		Metadata: map[string]string{"partitions": strings.Join(names, ",")},
	})
	if err != nil {
		return status.Error(c, b.String())
	}
	return st.Err()
}

// renamer names the caller's field for position pos of the call's keys;
// suffix is what followed the storage node's "keys[j]" or "mutations[j]"
// (e.g. ".value").
type renamer func(pos int, suffix string) string

var subField = regexp.MustCompile(`^(keys|mutations)\[(\d+)\](.*)$`)

// renameFields rewrites the field violations of a storage node's
// InvalidArgument from the node's numbering (its sub-batch) to the caller's.
func renameFields(st *status.Status, idx []int, rename renamer) *status.Status {
	changed := false
	msg := st.Message()
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			m := subField.FindStringSubmatch(v.GetField())
			if m == nil {
				continue
			}
			j, err := strconv.Atoi(m[2])
			if err != nil || j >= len(idx) {
				continue
			}
			if f := rename(idx[j], m[3]); f != "" {
				msg = strings.ReplaceAll(msg, v.GetField(), f)
				v.Field = f
				changed = true
			}
		}
		if changed {
			out := status.New(st.Code(), msg)
			if o, err := out.WithDetails(br); err == nil {
				return o
			}
			return out
		}
	}
	return st
}
