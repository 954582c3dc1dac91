package commands

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match with errors.Is.
var (
	// ErrNotFound: the connection does not exist, or belongs to another tenant (the two are
	// indistinguishable on purpose, G9). *NotFoundError carries the id.
	ErrNotFound = errors.New("commands: connection not found")
	// ErrUnauthenticated: the context carries no principal (WithPrincipal), or the command bus
	// could not authenticate the message's credential.
	ErrUnauthenticated = errors.New("commands: unauthenticated")
	// ErrConflict: the append kept losing to concurrent writers until the attempts ran out
	// (*ConflictError).
	ErrConflict = errors.New("commands: too many concurrent changes")
	// ErrNothingToDispatch: DispatchNext found no pending message.
	ErrNothingToDispatch = errors.New("commands: nothing to dispatch")
)

// NotFoundError reports a connection that does not exist for the caller's tenant.
type NotFoundError struct {
	ConnectionID string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("commands: connection %q not found", e.ConnectionID)
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// ConflictError reports that Attempts appends at the expected revision all failed because other
// writers appended first. Err is the last *eventstore.WrongExpectedRevisionError.
type ConflictError struct {
	ConnectionID string
	Attempts     int
	Err          error
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("commands: connection %q: gave up after %d conflicting appends: %v", e.ConnectionID, e.Attempts, e.Err)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Unwrap returns the last wrong-expected-revision error.
func (e *ConflictError) Unwrap() error { return e.Err }
