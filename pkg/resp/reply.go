package resp

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// writer writes one command's reply in the connection's protocol version:
// RESP3 has its own null, map, set and double types, RESP2 spells them
// as null bulk strings and flat arrays.
type writer struct {
	c       redcon.Conn
	resp3   bool
	outcome string // "" until an error is written: then its code
}

func (w *writer) ok()                 { w.c.WriteString("OK") }
func (w *writer) status(s string)     { w.c.WriteString(s) }
func (w *writer) int(n int64)         { w.c.WriteInt64(n) }
func (w *writer) bulk(b []byte)       { w.c.WriteBulk(b) }
func (w *writer) bulkString(s string) { w.c.WriteBulkString(s) }
func (w *writer) array(n int)         { w.c.WriteArray(n) }

// null is RESP3's null, or RESP2's null bulk string.
func (w *writer) null() {
	if w.resp3 {
		w.c.WriteRaw([]byte("_\r\n"))
		return
	}
	w.c.WriteNull()
}

// nullArray is RESP3's null, or RESP2's null array.
func (w *writer) nullArray() {
	if w.resp3 {
		w.c.WriteRaw([]byte("_\r\n"))
		return
	}
	w.c.WriteRaw([]byte("*-1\r\n"))
}

// mapHeader starts a map of n pairs (RESP2: an array of 2n).
func (w *writer) mapHeader(n int) {
	if w.resp3 {
		w.c.WriteRaw([]byte("%" + strconv.Itoa(n) + "\r\n"))
		return
	}
	w.c.WriteArray(2 * n)
}

// setHeader starts a set of n (RESP2: an array).
func (w *writer) setHeader(n int) {
	if w.resp3 {
		w.c.WriteRaw([]byte("~" + strconv.Itoa(n) + "\r\n"))
		return
	}
	w.c.WriteArray(n)
}

// value writes a read value: its bytes or null.
func (w *writer) value(v Value) {
	if !v.Found {
		w.null()
		return
	}
	w.bulk(v.Data)
}

// err writes an error reply ("CODE message") and returns its code.
func (w *writer) err(msg string) string {
	msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	w.c.WriteError(msg)
	code, _, _ := strings.Cut(msg, " ")
	w.outcome = code
	return code
}

// fail writes err as a Redis error and returns its code.
func (w *writer) fail(err error) string { return w.err(replyError(err)) }

// Redis's texts for the errors more than one command answers.
const (
	errNotInteger = "ERR value is not an integer or out of range"
	errSyntax     = "ERR syntax error"
	errOverflow   = "ERR increment or decrement would overflow"
)

// replyError is the Redis error for a backend error: an Error or
// MovedError as it is; the storage node's NOT_INTEGER and OVERFLOW as
// Redis words them; a frozen or moved slot the router could not wait out
// as TRYAGAIN (the client retries); bad input as ERR with the node's
// message; anything else as ERR naming what failed.
func replyError(err error) string {
	var re Error
	var me *MovedError
	switch {
	case errors.As(err, &re):
		return string(re)
	case errors.As(err, &me):
		return me.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "ERR timeout: the cluster did not answer in time (" + err.Error() + ")"
	}
	// In process (cluster mode) the node's domain errors arrive as they
	// are; over gRPC (proxy mode) as statuses FromStatus turns back.
	switch derr := rpcerr.FromStatus(err); {
	case errors.Is(derr, rpcerr.ErrNotInteger):
		return errNotInteger
	case errors.Is(derr, rpcerr.ErrOverflow):
		return errOverflow
	}
	err = rpcerr.ToStatus(err)
	st, _ := status.FromError(err)
	switch c := route.Classify(err); c.Kind {
	case route.Moved, route.Frozen:
		return "TRYAGAIN " + st.Message()
	case route.NodeUnavailable:
		if st.Code() == grpccodes.DeadlineExceeded {
			return "ERR timeout: " + st.Message()
		}
		return "CLUSTERDOWN " + st.Message()
	}
	switch st.Code() {
	case grpccodes.Unimplemented:
		return "ERR not supported by this cluster yet: " + st.Message()
	case grpccodes.PermissionDenied, grpccodes.Unauthenticated:
		return "NOPERM " + st.Message()
	}
	return "ERR " + st.Message()
}
