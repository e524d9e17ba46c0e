// Package rpcerr holds slotkv's domain errors and their one mapping to gRPC
// status codes with error details (DESIGN.md, "Errors on the wire").
//
// Domain code returns the sentinel errors below (wrapped with %w) or the typed
// errors that match them with errors.Is; only the gRPC layer calls ToStatus.
// Clients call FromStatus to get the typed errors back, so a router can read
// the owner of a moved slot or the retry delay of a frozen one.
package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of every slotkv error.
const Domain = "slotkv.io"

// ErrorInfo reasons.
const (
	ReasonSlotMoved      = "SLOT_MOVED"
	ReasonSlotUnassigned = "SLOT_UNASSIGNED"
	ReasonNoTopology     = "NO_TOPOLOGY"
	ReasonStaleTopology  = "STALE_TOPOLOGY"
	ReasonSlotFrozen     = "SLOT_FROZEN"
	// ReasonNotInteger: INCRBY on a value that is not a base-10 signed
	// 64-bit integer (Redis: "value is not an integer or out of range").
	ReasonNotInteger = "NOT_INTEGER"
	// ReasonOverflow: INCRBY whose result leaves the signed 64-bit range
	// (Redis: "increment or decrement would overflow").
	ReasonOverflow = "OVERFLOW"
)

// Sentinel errors. Each maps to one gRPC code in ToStatus.
var (
	// ErrInvalidArgument: bad input (InvalidArgument). Prefer FieldError.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the key, job or record does not exist (NotFound).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the thing to create exists already (AlreadyExists).
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the request conflicts with the current state (FailedPrecondition).
	ErrConflict = errors.New("conflict")
	// ErrSlotMoved: the slot is served by another node (FailedPrecondition, SLOT_MOVED).
	ErrSlotMoved = errors.New("slot moved")
	// ErrSlotUnassigned: no node serves the slot (FailedPrecondition, SLOT_UNASSIGNED).
	ErrSlotUnassigned = errors.New("slot unassigned")
	// ErrNoTopology: the node has no topology yet (FailedPrecondition, NO_TOPOLOGY).
	ErrNoTopology = errors.New("no topology")
	// ErrStaleTopology: a topology older than the one held (FailedPrecondition, STALE_TOPOLOGY).
	ErrStaleTopology = errors.New("stale topology")
	// ErrSlotFrozen: writes are paused for a hand-off (Unavailable + RetryInfo).
	ErrSlotFrozen = errors.New("slot frozen")
	// ErrUnavailable: try again later (Unavailable).
	ErrUnavailable = errors.New("unavailable")
	// ErrResourceExhausted: a limit of the service is reached, e.g. its
	// cap on jobs running at once (ResourceExhausted); the message names
	// the limit.
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnauthenticated and ErrPermissionDenied: cluster token missing or wrong.
	ErrUnauthenticated  = errors.New("unauthenticated")
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNotInteger: the value is not an integer (FailedPrecondition, NOT_INTEGER).
	ErrNotInteger = errors.New("value is not an integer or out of range")
	// ErrOverflow: an increment would overflow (FailedPrecondition, OVERFLOW).
	ErrOverflow = errors.New("increment or decrement would overflow")
)

// FieldError is bad input in one request field. It matches ErrInvalidArgument.
type FieldError struct {
	Field  string // request field, e.g. "key" or "mutations[3].value"
	Reason string // what is wrong with it
}

func (e *FieldError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason) }

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidArgument }

// InvalidField returns a *FieldError for field with a formatted reason.
func InvalidField(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// SlotMovedError says which node serves a slot now. It matches ErrSlotMoved.
type SlotMovedError struct {
	Slot         uint16
	OwnerID      string
	OwnerAddress string // gRPC address of the owner
	Version      uint64 // topology version the answer comes from
}

func (e *SlotMovedError) Error() string {
	return fmt.Sprintf("slot %d moved to node %s at %s (topology version %d)", e.Slot, e.OwnerID, e.OwnerAddress, e.Version)
}

// Is makes errors.Is(err, ErrSlotMoved) true.
func (e *SlotMovedError) Is(target error) bool { return target == ErrSlotMoved }

// SlotFrozenError says a slot's calls are paused and when to retry. It
// matches ErrSlotFrozen.
type SlotFrozenError struct {
	Slot       uint16
	RetryAfter time.Duration
}

func (e *SlotFrozenError) Error() string {
	return fmt.Sprintf("slot %d is frozen for a hand-off; retry after %s", e.Slot, e.RetryAfter)
}

// Is makes errors.Is(err, ErrSlotFrozen) true.
func (e *SlotFrozenError) Is(target error) bool { return target == ErrSlotFrozen }

// ToStatus maps a domain error to a gRPC status error with details. An error
// that already carries a status is returned as is; nil stays nil.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	msg := err.Error()
	var (
		fe *FieldError
		sm *SlotMovedError
		sf *SlotFrozenError
	)
	switch {
	case errors.As(err, &fe):
		return withDetails(codes.InvalidArgument, msg, &errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.Field, Description: fe.Reason}},
		})
	case errors.As(err, &sm):
		return withDetails(codes.FailedPrecondition, msg, &errdetails.ErrorInfo{
			Reason: ReasonSlotMoved, Domain: Domain,
			Metadata: map[string]string{
				"slot":             strconv.Itoa(int(sm.Slot)),
				"owner_id":         sm.OwnerID,
				"owner_address":    sm.OwnerAddress,
				"topology_version": strconv.FormatUint(sm.Version, 10),
			},
		})
	case errors.As(err, &sf):
		return withDetails(codes.Unavailable, msg,
			&errdetails.ErrorInfo{Reason: ReasonSlotFrozen, Domain: Domain,
				Metadata: map[string]string{"slot": strconv.Itoa(int(sf.Slot))}},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(sf.RetryAfter)})
	case errors.Is(err, ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, msg)
	case errors.Is(err, ErrSlotMoved):
		return reason(codes.FailedPrecondition, msg, ReasonSlotMoved)
	case errors.Is(err, ErrSlotUnassigned):
		return reason(codes.FailedPrecondition, msg, ReasonSlotUnassigned)
	case errors.Is(err, ErrNoTopology):
		return reason(codes.FailedPrecondition, msg, ReasonNoTopology)
	case errors.Is(err, ErrStaleTopology):
		return reason(codes.FailedPrecondition, msg, ReasonStaleTopology)
	case errors.Is(err, ErrNotInteger):
		return reason(codes.FailedPrecondition, msg, ReasonNotInteger)
	case errors.Is(err, ErrOverflow):
		return reason(codes.FailedPrecondition, msg, ReasonOverflow)
	case errors.Is(err, ErrConflict):
		return status.Error(codes.FailedPrecondition, msg)
	case errors.Is(err, ErrSlotFrozen):
		return reason(codes.Unavailable, msg, ReasonSlotFrozen)
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, ErrResourceExhausted):
		return status.Error(codes.ResourceExhausted, msg)
	case errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, msg)
	case errors.Is(err, ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	}
	return status.Error(codes.Internal, msg)
}

func reason(c codes.Code, msg, r string) error {
	return withDetails(c, msg, &errdetails.ErrorInfo{Reason: r, Domain: Domain})
}

func withDetails(c codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st := status.New(c, msg)
	if wd, err := st.WithDetails(details...); err == nil {
		st = wd
	}
	return st.Err()
}

// FromStatus turns a status error from a slotkv server back into domain
// errors: *SlotMovedError, *SlotFrozenError, *FieldError, or the sentinel of
// its code, wrapped so the original message stays readable. Errors that carry
// no status are returned unchanged.
func FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	var bad *errdetails.BadRequest
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		case *errdetails.BadRequest:
			bad = d
		}
	}
	if info != nil && info.GetDomain() == Domain {
		md := info.GetMetadata()
		switch info.GetReason() {
		case ReasonSlotMoved:
			slot, _ := strconv.Atoi(md["slot"])
			ver, _ := strconv.ParseUint(md["topology_version"], 10, 64)
			return &SlotMovedError{Slot: uint16(slot), OwnerID: md["owner_id"], OwnerAddress: md["owner_address"], Version: ver}
		case ReasonSlotFrozen:
			slot, _ := strconv.Atoi(md["slot"])
			e := &SlotFrozenError{Slot: uint16(slot)}
			if retry != nil {
				e.RetryAfter = retry.GetRetryDelay().AsDuration()
			}
			return e
		case ReasonSlotUnassigned:
			return fmt.Errorf("%w: %s", ErrSlotUnassigned, st.Message())
		case ReasonNoTopology:
			return fmt.Errorf("%w: %s", ErrNoTopology, st.Message())
		case ReasonStaleTopology:
			return fmt.Errorf("%w: %s", ErrStaleTopology, st.Message())
		case ReasonNotInteger:
			return &remoteError{sentinel: ErrNotInteger, st: err}
		case ReasonOverflow:
			return &remoteError{sentinel: ErrOverflow, st: err}
		}
	}
	if bad != nil && len(bad.GetFieldViolations()) > 0 {
		v := bad.GetFieldViolations()[0]
		return &FieldError{Field: v.GetField(), Reason: v.GetDescription()}
	}
	var sentinel error
	switch st.Code() {
	case codes.InvalidArgument:
		sentinel = ErrInvalidArgument
	case codes.NotFound:
		sentinel = ErrNotFound
	case codes.AlreadyExists:
		sentinel = ErrAlreadyExists
	case codes.FailedPrecondition:
		sentinel = ErrConflict
	case codes.Unavailable:
		sentinel = ErrUnavailable
	case codes.ResourceExhausted:
		sentinel = ErrResourceExhausted
	case codes.Unauthenticated:
		sentinel = ErrUnauthenticated
	case codes.PermissionDenied:
		sentinel = ErrPermissionDenied
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	case codes.Canceled:
		sentinel = context.Canceled
	default:
		return err
	}
	return &remoteError{sentinel: sentinel, st: err}
}

// remoteError keeps the server's status (so ToStatus passes it through
// unchanged when a service relays it) while matching the sentinel.
type remoteError struct {
	sentinel error
	st       error
}

func (e *remoteError) Error() string              { return e.st.Error() }
func (e *remoteError) Is(target error) bool       { return target == e.sentinel }
func (e *remoteError) GRPCStatus() *status.Status { s, _ := status.FromError(e.st); return s }
