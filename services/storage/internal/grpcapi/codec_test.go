package grpcapi

import (
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
)

// within reports whether sub's bytes lie inside buf (sub aliases it).
func within(sub, buf []byte) bool {
	if len(sub) == 0 || len(buf) == 0 {
		return false
	}
	s, b := uintptr(unsafe.Pointer(unsafe.SliceData(sub))), uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return s >= b && s+uintptr(len(sub)) <= b+uintptr(len(buf))
}

// TestImportCodec: ImportCodec decodes an ImportRequest exactly as
// proto.Unmarshal does, whatever the order and repetition of its fields,
// with packed aliasing the received buffer; other messages and malformed
// data go through the proto codec.
func TestImportCodec(t *testing.T) {
	t.Parallel()
	full := &storagev1.ImportRequest{JobId: "job", StreamId: "s1", Seq: 42,
		Entries: []*storagev1.MigrationEntry{{Seq: 7, Key: []byte("k"), Value: []byte("v")}},
		Packed:  []byte("packed entries")}
	goOrder, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	field := func(num protowire.Number, v []byte) []byte {
		b := protowire.AppendTag(nil, num, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		wire  []byte
		alias bool // packed must alias the buffer
	}{
		{"as Go marshals it (packed last)", goOrder, true},
		{"no packed", cat(field(1, []byte("job")), field(2, []byte("s1"))), false},
		{"packed first", cat(field(5, []byte("first")), field(1, []byte("job"))), true},
		{"packed twice: the last wins", cat(field(5, []byte("old")), field(1, []byte("job")), field(5, []byte("new"))), true},
		{"packed twice, both last", cat(field(1, []byte("job")), field(5, []byte("old")), field(5, []byte("new"))), true},
		{"an unknown field kept", cat(field(1, []byte("job")), field(99, []byte("x")), field(5, []byte("p"))), true},
	}
	codec := ImportCodec()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := new(storagev1.ImportRequest)
			if err := proto.Unmarshal(tt.wire, want); err != nil {
				t.Fatal(err)
			}
			buf := append([]byte(nil), tt.wire...)
			got := new(storagev1.ImportRequest)
			if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(buf)}, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("decoded %v, want %v", got, want)
			}
			if string(got.ProtoReflect().GetUnknown()) != string(want.ProtoReflect().GetUnknown()) {
				t.Errorf("unknown fields %q, want %q", got.ProtoReflect().GetUnknown(), want.ProtoReflect().GetUnknown())
			}
			if a := within(got.GetPacked(), buf); a != tt.alias {
				t.Errorf("packed aliases the buffer: %v, want %v", a, tt.alias)
			}
			if len(got.GetPacked()) != cap(got.GetPacked()) {
				t.Errorf("packed has room to grow into the buffer: len %d cap %d", len(got.GetPacked()), cap(got.GetPacked()))
			}
		})
	}

	t.Run("malformed", func(t *testing.T) {
		t.Parallel()
		bad := goOrder[:len(goOrder)-3] // packed cut short
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, new(storagev1.ImportRequest)); err == nil {
			t.Error("a cut message decoded without an error")
		}
	})
	t.Run("split buffer, and other messages", func(t *testing.T) {
		t.Parallel()
		// A message in several buffers (as HTTP/2 frames bring a large
		// one) is made one first, and packed aliases that copy.
		half := len(goOrder) / 2
		got := new(storagev1.ImportRequest)
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(goOrder[:half]), mem.SliceBuffer(goOrder[half:])}, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, full) || within(got.GetPacked(), goOrder) {
			t.Errorf("split buffer decoded %v (aliasing the parts %v), want %v", got, within(got.GetPacked(), goOrder), full)
		}
		resp := &storagev1.ImportResponse{StreamId: "s1", Seq: 3, Applied: true}
		out, err := codec.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		back := new(storagev1.ImportResponse)
		if err := codec.Unmarshal(out, back); err != nil || !proto.Equal(back, resp) {
			t.Errorf("ImportResponse round trip: %v, %v", back, err)
		}
	})
}
