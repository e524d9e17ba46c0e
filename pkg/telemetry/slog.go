package telemetry

import (
	"context"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys added by SlogHandler.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// NewLogger returns a logger writing text (or JSON when json is true) lines
// to w at the given minimum level, with trace_id and span_id added to every
// record logged with a context that carries a span (logger.InfoContext and
// friends; the plain Info variants have no context to read them from).
func NewLogger(w io.Writer, level slog.Leveler, json bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if json {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(SlogHandler(h))
}

// SlogHandler wraps h so that records logged with a context carrying a valid
// span context get trace_id and span_id attributes. Records logged after
// WithGroup carry them inside that group, as slog qualifies every record
// attribute by the open groups.
func SlogHandler(h slog.Handler) slog.Handler {
	if th, ok := h.(traceHandler); ok {
		return th // already wrapped; don't add the ids twice
	}
	return traceHandler{inner: h}
}

type traceHandler struct {
	inner slog.Handler
}

func (h traceHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		// Clone before adding: the record may be shared with other handlers
		// (slog documents that handlers must not modify a record they
		// retain), and AddAttrs on a copy can alias its backing array.
		r = r.Clone()
		r.AddAttrs(
			slog.String(TraceIDKey, sc.TraceID().String()),
			slog.String(SpanIDKey, sc.SpanID().String()),
		)
	}
	return h.inner.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{inner: h.inner.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{inner: h.inner.WithGroup(name)}
}
