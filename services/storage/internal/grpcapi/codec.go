package grpcapi

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
)

// ImportCodec is gRPC's proto codec, except that an ImportRequest's
// packed entries alias the received message instead of being copied out
// of it: protobuf-go copies every bytes field, and for an import stream
// that copy (and its allocation) is a tenth of the destination's CPU,
// once per byte moved. Install it on the storage node's server with
// grpc.ForceServerCodecV2.
//
// The message is made one buffer as the proto codec makes it (a message
// that arrived in several buffers is copied into one from gRPC's pool; one
// that arrived in one is referenced), and packed aliases that buffer. The
// codec never frees it, so it never goes back to the pool to be reused
// under the aliasing slice; the garbage collector frees it with the
// request. Every other message goes through the proto codec unchanged.
func ImportCodec() encoding.CodecV2 {
	return importCodec{encoding.GetCodecV2("proto")}
}

type importCodec struct{ encoding.CodecV2 }

func (c importCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*storagev1.ImportRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	rest, packed, ok := splitPacked(buf.ReadOnlyData())
	if !ok {
		// Malformed: the proto codec says how.
		buf.Free()
		return c.CodecV2.Unmarshal(data, v)
	}
	err := proto.Unmarshal(rest, req)
	if err != nil || packed == nil {
		buf.Free() // nothing aliases it
		return err
	}
	req.Packed = packed // buf is kept for good (see ImportCodec)
	return nil
}

// packedField is ImportRequest.packed's field number, from the generated
// descriptor (a renamed field fails loudly at start).
var packedField = (&storagev1.ImportRequest{}).ProtoReflect().Descriptor().Fields().ByName("packed").Number()

// splitPacked returns the message b without its packed field, and that
// field's value aliasing b (the last occurrence, as proto3 decodes a
// repeated scalar field). rest aliases b when packed comes once and last,
// as Go's marshaling writes it; otherwise it is a copy of the other
// fields. ok is false for malformed wire data.
func splitPacked(b []byte) (rest, packed []byte, ok bool) {
	at, seen := -1, 0 // offset of the last field when it is packed; packed fields
	ok = eachField(b, func(off, tag int, num protowire.Number, typ protowire.Type, field []byte) {
		at = -1
		if num == packedField && typ == protowire.BytesType {
			packed, _ = protowire.ConsumeBytes(field[tag:])
			packed = packed[:len(packed):len(packed)] // an append must not run into the next field
			at, seen = off, seen+1
		}
	})
	switch {
	case !ok:
		return nil, nil, false
	case seen == 0:
		return b, nil, true
	case seen == 1 && at >= 0:
		return b[:at], packed, true
	}
	eachField(b, func(_, _ int, num protowire.Number, typ protowire.Type, field []byte) {
		if num != packedField || typ != protowire.BytesType {
			rest = append(rest, field...)
		}
	})
	return rest, packed, true
}

// eachField calls fn with every field of the message b: its offset, the
// length of its tag, its number and wire type, and its bytes (tag
// included). It reports false, having stopped, at malformed wire data.
func eachField(b []byte, fn func(off, tag int, num protowire.Number, typ protowire.Type, field []byte)) bool {
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if m < 0 {
			return false
		}
		fn(off, n, num, typ, b[off:off+n+m])
		off += n + m
	}
	return true
}
