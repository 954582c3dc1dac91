package connection

import (
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Namespace is the UUIDv5 namespace of every id waqueue derives. It never changes: stored ids
// depend on it.
var Namespace = uuid.MustParse("2c1fed8b-3ded-4105-ab03-9915b3fa7f85")

// StreamPrefix starts the name of every connection stream; subscribe with it as a stream prefix.
const StreamPrefix = "connection-"

// DefaultTenant is the tenant of every connection created before connection ids were scoped to
// their tenant (the only tenant that existed then). Its keys are the bare ids.
const DefaultTenant = "default"

// KeySep separates the tenant from the id in a key. ValidateID admits neither it nor any
// character that could be confused with it, in tenant or connection ids.
const KeySep = ":"

// Key returns the tenant-scoped key of a connection of tenant: "<tenant>:<id>", or the bare id
// for DefaultTenant (whose streams and read-model rows predate scoping and keep their names, so
// nothing stored is rewritten; see docs/architecture.md). Keys identify a connection
// everywhere inside waqueue: its stream (StreamName), the read models' conn_id columns, the
// dispatcher's loops, the transports; the bare id appears only at the edges (API, broker,
// integration events), always with the caller's tenant beside it.
//
// ref is the id as a caller of tenant names it, or a key of tenant (processes that took it from
// a stream name pass one back). Whatever ref is, the result names a connection of tenant and
// never one of another tenant: a ref naming another tenant is qualified again, giving a key that
// no valid id produces, so it is simply not found. Key is a pure string function; it does not
// validate (Register does).
func Key(tenant, ref string) string {
	if t, id, ok := strings.Cut(ref, KeySep); ok && t == tenant {
		ref = id
	}
	if tenant == DefaultTenant && !strings.Contains(ref, KeySep) {
		return ref
	}
	return tenant + KeySep + ref
}

// SplitKey returns the tenant and the connection id of key (the inverse of Key).
func SplitKey(key string) (tenant, id string) {
	if t, id, ok := strings.Cut(key, KeySep); ok {
		return t, id
	}
	return DefaultTenant, key
}

// ValidateKey checks that key is a key as Key makes them: a valid connection id, qualified by a
// valid tenant id other than DefaultTenant, or bare (ValidateID). Errors are *ValidationError
// with CodeInvalidID.
func ValidateKey(field, key string) error {
	t, id := SplitKey(key)
	if err := ValidateID(field, t); err != nil {
		return err
	}
	if t == DefaultTenant && strings.Contains(key, KeySep) {
		return invalid(CodeInvalidID, field, "the default tenant's keys are bare ids")
	}
	return ValidateID(field, id)
}

// StreamName returns the name of the event stream of the connection with key key (see Key):
// "connection-<tenant>:<id>", or "connection-<id>" for DefaultTenant. The name is unambiguous:
// neither tenant nor id can contain KeySep.
func StreamName(key string) string { return StreamPrefix + key }

// IDFromStream returns the connection key (see Key and SplitKey) of a stream name built by
// StreamName, and false for any other stream.
func IDFromStream(stream string) (string, bool) {
	if len(stream) <= len(StreamPrefix) || stream[:len(StreamPrefix)] != StreamPrefix {
		return "", false
	}
	return stream[len(StreamPrefix):], true
}

func derive(parts ...string) uuid.UUID {
	n := 0
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
		b = append(b, 0) // NUL separates parts: no two part lists give the same input
	}
	return uuid.NewSHA1(Namespace, b)
}

// MessageIDFor returns the id of the 1:1 message enqueued on connection connID of tenant under
// idempotencyKey. A retry with the same key yields the same id, so the store recognises the
// duplicate (see EventID).
func MessageIDFor(tenant, connID, idempotencyKey string) uuid.UUID {
	return derive("message", tenant, connID, idempotencyKey)
}

// BroadcastIDFor returns the id of the broadcast started on connection connID of tenant under
// idempotencyKey.
func BroadcastIDFor(tenant, connID, idempotencyKey string) uuid.UUID {
	return derive("broadcast", tenant, connID, idempotencyKey)
}

// BroadcastMessageID returns the id of the message for the recipient at index (0-based, in the
// order of the command's recipient list) of broadcast id.
func BroadcastMessageID(broadcast uuid.UUID, index int) uuid.UUID {
	return derive("broadcast-message", broadcast.String(), strconv.Itoa(index))
}

// ClearIDFor returns the id of the clear requested on connection connID of tenant under
// idempotencyKey.
func ClearIDFor(tenant, connID, idempotencyKey string) uuid.UUID {
	return derive("clear", tenant, connID, idempotencyKey)
}

// EventID returns the store id of e, about to be appended to stream at revision (the revision
// the event will occupy: expected revision + 1 + its index in the batch, 0 for a new stream).
//
// Events about a uniquely identified thing are keyed by that thing, independent of the
// revision: a message's MessageQueued, MessageDispatched, MessageSent, ... by message id and
// type; BroadcastStarted by broadcast id; ClearQueueRequested and QueueCleared by clear id;
// ConnectionRegistered by the connection. Appending one again anywhere in the stream is
// therefore refused by the store (eventstore.ErrDuplicateEventID) or, at the same place,
// accepted idempotently: this is what makes enqueue idempotent and makes "dispatched twice"
// impossible at the store level too (G5).
//
// Other events (bans, pairing, holds, ...) are keyed by stream, revision and type, so the retry
// of one decision at the same expected revision writes nothing twice.
func EventID(stream string, revision uint64, e Event) uuid.UUID {
	if k := e.naturalKey(); k != "" {
		return derive("event", e.EventType(), k)
	}
	return derive("event", e.EventType(), stream, strconv.FormatUint(revision, 10))
}
