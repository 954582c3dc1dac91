package connection

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// decoders maps every stable type name to a decoder. It is the one registry of event types,
// written down by hand: renaming a Go type changes nothing stored.
var decoders = map[string]func([]byte) (Event, error){
	TypeConnectionRegistered:     decodeAs[ConnectionRegistered],
	TypeOnBanPolicyChanged:       decodeAs[OnBanPolicyChanged],
	TypeSessionPaired:            decodeAs[SessionPaired],
	TypeSessionInvalidated:       decodeAs[SessionInvalidated],
	TypeConnectionBanned:         decodeAs[ConnectionBanned],
	TypeBanLifted:                decodeAs[BanLifted],
	TypeMessageQueued:            decodeMessageQueued,
	TypeBroadcastStarted:         decodeAs[BroadcastStarted],
	TypeMessageDispatched:        decodeAs[MessageDispatched],
	TypeMessageSent:              decodeAs[MessageSent],
	TypeMessageDelivered:         decodeAs[MessageDelivered],
	TypeMessageRead:              decodeAs[MessageRead],
	TypeMessageFailed:            decodeAs[MessageFailed],
	TypeMessageExpired:           decodeAs[MessageExpired],
	TypeMessageOutcomeUnknown:    decodeAs[MessageOutcomeUnknown],
	TypeQueueHeld:                decodeAs[QueueHeld],
	TypeQueueResumed:             decodeAs[QueueResumed],
	TypeClearQueueRequested:      decodeAs[ClearQueueRequested],
	TypeQueueCleared:             decodeAs[QueueCleared],
	TypeTransportProblemObserved: decodeAs[TransportProblemObserved],
	TypeMessageSendDeferred:      decodeAs[MessageSendDeferred],
	TypeMessageSendRetried:       decodeAs[MessageSendRetried],
	TypeMessageCancelled:         decodeAs[MessageCancelled],
	TypeSendingPolicyChanged:     decodeAs[SendingPolicyChanged],
	TypeConnectionRetired:        decodeAs[ConnectionRetired],
	TypeBroadcastQueued:          decodeAs[BroadcastQueued],
}

func decodeAs[T Event](data []byte) (Event, error) {
	var e T
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, err
	}
	return e, nil
}

// EventTypes returns every stable event type name, sorted. Use it as a subscription filter.
func EventTypes() []string {
	types := make([]string, 0, len(decoders))
	for t := range decoders {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// Encode returns e's stable type name and JSON body.
func Encode(e Event) (eventType string, data []byte, err error) {
	if e == nil {
		return "", nil, errors.New("connection: encode nil event")
	}
	data, err = json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("connection: encode %s: %w", e.EventType(), err)
	}
	return e.EventType(), data, nil
}

// Decode returns the event of stable type eventType encoded in data (by Encode). An unknown
// type yields an *UnknownEventTypeError (errors.Is(err, ErrUnknownEventType)); a body that does
// not decode yields a *DecodeError (errors.Is(err, ErrUndecodableEvent)). Decode returns event
// values (ConnectionRegistered, not *ConnectionRegistered).
func Decode(eventType string, data []byte) (Event, error) {
	dec, ok := decoders[eventType]
	if !ok {
		return nil, &UnknownEventTypeError{Type: eventType}
	}
	e, err := dec(data)
	if err != nil {
		return nil, &DecodeError{Type: eventType, Err: err}
	}
	return e, nil
}

// IsKnownType reports whether eventType names an event of this package.
func IsKnownType(eventType string) bool {
	_, ok := decoders[eventType]
	return ok
}

var (
	// ErrUnknownEventType: Decode met a type name that is not an event of this package.
	ErrUnknownEventType = errors.New("connection: unknown event type")
	// ErrUndecodableEvent: an event body does not decode as its type.
	ErrUndecodableEvent = errors.New("connection: undecodable event")
)

// UnknownEventTypeError carries the unknown type name.
type UnknownEventTypeError struct{ Type string }

func (e *UnknownEventTypeError) Error() string {
	return fmt.Sprintf("connection: unknown event type %q", e.Type)
}

// Is makes errors.Is(err, ErrUnknownEventType) true.
func (e *UnknownEventTypeError) Is(target error) bool { return target == ErrUnknownEventType }

// DecodeError carries the type and the JSON error of an undecodable event body.
type DecodeError struct {
	Type string
	Err  error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("connection: decode %s: %v", e.Type, e.Err)
}

// Unwrap returns the JSON error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUndecodableEvent) true.
func (e *DecodeError) Is(target error) bool { return target == ErrUndecodableEvent }
