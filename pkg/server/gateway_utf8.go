package server

import (
	"net/http"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// utf8Middleware answers 400 (InvalidArgument, naming the parameter) to a
// REST call whose path parameters or query values are not valid UTF-8.
// The gateway copies them, percent-decoded, into proto string fields, and
// a string field that is not UTF-8 cannot be marshalled: the gateway's own
// gRPC call failed with "error while marshaling" as a 500, for a mistake
// of the caller's (found by the router's FuzzRESTBody with the key %FF).
// JSON bodies need no check: the marshaler already refuses bad UTF-8.
func utf8Middleware(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		bad := ""
		for name, v := range params {
			if !utf8.ValidString(v) && (bad == "" || name < bad) {
				bad = name // the smallest name, so the answer is stable
			}
		}
		if bad == "" {
			q := r.URL.Query()
			names := make([]string, 0, len(q))
			for name := range q {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				if slices.ContainsFunc(q[name], func(v string) bool { return !utf8.ValidString(v) }) {
					bad = name
					break
				}
			}
		}
		if bad == "" {
			next(w, r, params)
			return
		}
		if !utf8.ValidString(bad) {
			bad = strconv.Quote(bad) // a query name can be bad UTF-8 too
		}
		st := status.New(codes.InvalidArgument, bad+": not valid UTF-8")
		body, err := GatewayMarshaler().Marshal(st.Proto())
		if err != nil {
			// The status holds only valid UTF-8, so this is not expected;
			// still answer the caller's mistake as one.
			body = []byte(`{"code":3,"message":"not valid UTF-8","details":[]}`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(runtime.HTTPStatusFromCode(codes.InvalidArgument))
		_, _ = w.Write(body)
	}
}
