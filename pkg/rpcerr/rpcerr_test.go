package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		target error
	}{
		{"field", fmt.Errorf("put: %w", InvalidField("key", "empty key")), codes.InvalidArgument, ErrInvalidArgument},
		{"not found", fmt.Errorf("key %q: %w", "k", ErrNotFound), codes.NotFound, ErrNotFound},
		{"exists", ErrAlreadyExists, codes.AlreadyExists, ErrAlreadyExists},
		{"conflict", ErrConflict, codes.FailedPrecondition, ErrConflict},
		{"moved", &SlotMovedError{Slot: 42, OwnerID: "n2", OwnerAddress: "127.0.0.2:7000", Version: 7}, codes.FailedPrecondition, ErrSlotMoved},
		{"unassigned", fmt.Errorf("slot 9: %w", ErrSlotUnassigned), codes.FailedPrecondition, ErrSlotUnassigned},
		{"no topology", ErrNoTopology, codes.FailedPrecondition, ErrNoTopology},
		{"stale", fmt.Errorf("%w: have 5, got 4", ErrStaleTopology), codes.FailedPrecondition, ErrStaleTopology},
		{"frozen", &SlotFrozenError{Slot: 3, RetryAfter: 20 * time.Millisecond}, codes.Unavailable, ErrSlotFrozen},
		{"unavailable", ErrUnavailable, codes.Unavailable, ErrUnavailable},
		{"exhausted", fmt.Errorf("16 jobs running, the limit (max_running_jobs): %w", ErrResourceExhausted), codes.ResourceExhausted, ErrResourceExhausted},
		{"unauthenticated", ErrUnauthenticated, codes.Unauthenticated, ErrUnauthenticated},
		{"denied", ErrPermissionDenied, codes.PermissionDenied, ErrPermissionDenied},
		{"deadline", fmt.Errorf("scan: %w", context.DeadlineExceeded), codes.DeadlineExceeded, context.DeadlineExceeded},
		{"canceled", context.Canceled, codes.Canceled, context.Canceled},
		{"not integer", fmt.Errorf("incr %q: %w", "k", ErrNotInteger), codes.FailedPrecondition, ErrNotInteger},
		{"overflow", fmt.Errorf("incr %q: %w", "k", ErrOverflow), codes.FailedPrecondition, ErrOverflow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := ToStatus(tc.err)
			if got := status.Code(st); got != tc.code {
				t.Fatalf("code = %v, want %v", got, tc.code)
			}
			back := FromStatus(st)
			if !errors.Is(back, tc.target) {
				t.Fatalf("FromStatus(%v) = %v, does not match %v", st, back, tc.target)
			}
			// Relaying a received error keeps its code and details.
			if again := ToStatus(back); status.Code(again) != tc.code {
				t.Fatalf("relayed code = %v, want %v", status.Code(again), tc.code)
			}
		})
	}
}

func TestDetailsSurvive(t *testing.T) {
	t.Parallel()
	back := FromStatus(ToStatus(&SlotMovedError{Slot: 42, OwnerID: "n2", OwnerAddress: "127.0.0.2:7000", Version: 7}))
	var sm *SlotMovedError
	if !errors.As(back, &sm) || *sm != (SlotMovedError{Slot: 42, OwnerID: "n2", OwnerAddress: "127.0.0.2:7000", Version: 7}) {
		t.Fatalf("moved = %#v", back)
	}
	back = FromStatus(ToStatus(&SlotFrozenError{Slot: 3, RetryAfter: 20 * time.Millisecond}))
	var sf *SlotFrozenError
	if !errors.As(back, &sf) || sf.RetryAfter != 20*time.Millisecond || sf.Slot != 3 {
		t.Fatalf("frozen = %#v", back)
	}
	back = FromStatus(ToStatus(InvalidField("value", "is 2000000 bytes, above the 1048576-byte limit")))
	var fe *FieldError
	if !errors.As(back, &fe) || fe.Field != "value" {
		t.Fatalf("field = %#v", back)
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	if got := status.Code(ToStatus(errors.New("boom"))); got != codes.Internal {
		t.Fatalf("unknown error code = %v", got)
	}
}
