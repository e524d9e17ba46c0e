package kv

import (
	"bytes"
	"container/heap"
	"encoding/base64"
	"encoding/binary"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// Scan limits.
const (
	DefaultScanLimit = 100
	MaxScanLimit     = 10000
	// MaxScanBytes bounds one merged page (keys, values, framing) the way
	// storage bounds its own pages, so a page stays below gRPC's default
	// 4 MiB client limit; a page always holds at least one entry.
	MaxScanBytes  = 4<<20 - 64<<10
	entryOverhead = 24
)

// cursorV1 is the first byte of a version-1 cursor: then the slot (2 bytes,
// big-endian) and the key of the position to resume at (inclusive: the
// first key of that slot >= key).
const cursorV1 = 1

// encodeCursor returns the cursor that resumes right after (s, key).
func encodeCursor(s uint16, key []byte) string {
	b := make([]byte, 0, 3+len(key)+1)
	b = append(b, cursorV1)
	b = binary.BigEndian.AppendUint16(b, s)
	b = append(b, key...)
	b = append(b, 0) // key+"\x00" is the smallest key after key
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor returns the position a cursor resumes at.
func decodeCursor(c string) (*storagev1.ScanPosition, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 3 || b[0] != cursorV1 {
		return nil, rpcerr.InvalidField("cursor", "not a cursor this router made (pass next_cursor of a previous answer as it is)")
	}
	s := binary.BigEndian.Uint16(b[1:3])
	if int(s) >= slot.Count {
		return nil, rpcerr.InvalidField("cursor", "slot %d out of range", s)
	}
	return &storagev1.ScanPosition{Slot: uint32(s), Key: b[3:]}, nil
}

// pageHeap is the k-way merge of the partitions' pages by (slot, key).
type pageHeap struct {
	pages []*storagev1.ScanResponse
	pos   []int // next item of each page
	h     []int // page indexes with items left
}

func (m *pageHeap) head(p int) *storagev1.KeyValue { return m.pages[p].GetItems()[m.pos[p]] }

func (m *pageHeap) Len() int { return len(m.h) }
func (m *pageHeap) Less(i, j int) bool {
	a, b := m.head(m.h[i]), m.head(m.h[j])
	if a.GetSlot() != b.GetSlot() {
		return a.GetSlot() < b.GetSlot()
	}
	return bytes.Compare(a.GetKey(), b.GetKey()) < 0
}
func (m *pageHeap) Swap(i, j int) { m.h[i], m.h[j] = m.h[j], m.h[i] }
func (m *pageHeap) Push(x any)    { m.h = append(m.h, x.(int)) }
func (m *pageHeap) Pop() any {
	x := m.h[len(m.h)-1]
	m.h = m.h[:len(m.h)-1]
	return x
}

// mergePages merges the partitions' pages (each sorted by (slot, key),
// over disjoint slots) into at most limit entries in (slot, key) order and
// reports whether anything is left after them. from[i] is the page
// out[i] comes from.
//
// A partition whose page is used up but that has more (its page was cut by
// its size cap, next set) stops the merge there: an entry of another
// partition past that point could come after entries that partition has not
// sent yet. The page is then shorter than limit and the cursor resumes at
// the right place.
func mergePages(pages []*storagev1.ScanResponse, limit int) (out []*storagev1.KeyValue, from []int, more bool) {
	m := &pageHeap{pages: pages, pos: make([]int, len(pages))}
	for p, pg := range pages {
		if len(pg.GetItems()) > 0 {
			m.h = append(m.h, p)
		}
	}
	heap.Init(m)
	bytesOut := 0
	for m.Len() > 0 {
		if len(out) >= limit {
			return out, from, true
		}
		p := m.h[0]
		kv := m.head(p)
		size := len(kv.GetKey()) + len(kv.GetValue()) + entryOverhead
		if len(out) > 0 && bytesOut+size > MaxScanBytes {
			return out, from, true
		}
		out = append(out, kv)
		from = append(from, p)
		bytesOut += size
		m.pos[p]++
		if m.pos[p] < len(pages[p].GetItems()) {
			heap.Fix(m, 0)
			continue
		}
		heap.Pop(m)
		if pages[p].GetNext() != nil {
			return out, from, true // that partition has more: stop at its frontier
		}
	}
	// Every page used up; more only if a partition said so.
	for _, pg := range pages {
		if pg.GetNext() != nil {
			return out, from, true
		}
	}
	return out, from, false
}
