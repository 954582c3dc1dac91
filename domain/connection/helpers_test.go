package connection_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

const (
	tenant = "t1"
	connID = "c1"
	ownNum = "+491701234567"
	alice  = "+12015550123"
	bob    = "+12015550124"
	carol  = "+12015550125"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func at(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }

// Event builders for "given" histories. They build the events the decisions would build, so
// the tables read as histories; TestBuildersMatchDecisions checks that they agree.

func registered(policy connection.OnBanPolicy) connection.Event {
	return connection.ConnectionRegistered{ConnectionID: connID, TenantID: tenant, Phone: ownNum, OnBan: policy,
		RegisteredBy: "op", RegisteredAt: t0}
}

func paired() connection.Event {
	return connection.SessionPaired{Actor: "system", PairedAt: t0}
}

func msgID(seq uint64) uuid.UUID {
	return connection.MessageIDFor(tenant, connID, "k"+strconv.FormatUint(seq, 10))
}

func queued(seq uint64) connection.Event {
	return connection.MessageQueued{MessageID: msgID(seq), Seq: seq, Recipient: alice, Text: "hi",
		IdempotencyKey: "k" + strconv.FormatUint(seq, 10), QueuedBy: "svc", QueuedAt: t0}
}

func queuedTTL(seq uint64, expires time.Time) connection.Event {
	e := queued(seq).(connection.MessageQueued)
	e.ExpiresAt = expires
	return e
}

var bcastID = connection.BroadcastIDFor(tenant, connID, "b1")

// broadcast returns BroadcastStarted and its MessageQueued events, recipients alice, bob, carol.
func broadcast(id uuid.UUID, first uint64) []connection.Event {
	rcpts := []string{alice, bob, carol}
	out := []connection.Event{connection.BroadcastStarted{BroadcastID: id, Text: "sale", FirstSeq: first,
		Count: len(rcpts), StartedBy: "svc", StartedAt: t0}}
	for i, r := range rcpts {
		out = append(out, connection.MessageQueued{MessageID: connection.BroadcastMessageID(id, i), Seq: first + uint64(i),
			Recipient: r, BroadcastID: id, BroadcastIndex: i, QueuedBy: "svc", QueuedAt: t0})
	}
	return out
}

// broadcastChunked is what StartBroadcast decides for broadcast: BroadcastStarted and one
// BroadcastQueued standing for the same three MessageQueued events.
func broadcastChunked(id uuid.UUID, first uint64) []connection.Event {
	old := broadcast(id, first)
	return []connection.Event{old[0], connection.BroadcastQueued{BroadcastID: id, FirstSeq: first, FirstIndex: 0,
		Recipients: []string{alice, bob, carol}, QueuedBy: "svc", QueuedAt: t0}}
}

func dispatched(id uuid.UUID, seq uint64) connection.Event {
	return connection.MessageDispatched{MessageID: id, Seq: seq, DispatchedAt: t0}
}

func sent(id uuid.UUID, seq uint64) connection.Event {
	return connection.MessageSent{MessageID: id, Seq: seq, SentAt: t0}
}

var clearID = connection.ClearIDFor(tenant, connID, "clear-1")

func clearRequested(scope connection.ClearScope, upTo uint64, purge []connection.SeqRange, inFlight []connection.InFlightMessage) connection.Event {
	var n uint64
	for _, r := range purge {
		n += r.Len()
	}
	if purge == nil {
		purge = []connection.SeqRange{}
	}
	if inFlight == nil {
		inFlight = []connection.InFlightMessage{}
	}
	return connection.ClearQueueRequested{ClearID: clearID, Scope: scope, RequestedBy: "op", Reason: "ban",
		RequestedAt: t0, UpToSeq: upTo, Purge: purge, PurgeCount: n, InFlight: inFlight, Then: connection.ClearThenKeep}
}

// clearRequestedThen is clearRequested with another Then.
func clearRequestedThen(then connection.ClearThen, upTo uint64, purge []connection.SeqRange) connection.Event {
	e := clearRequested(connection.WholeQueue, upTo, purge, nil).(connection.ClearQueueRequested)
	e.Then = then
	return e
}

func cleared(req connection.Event) connection.Event {
	r := req.(connection.ClearQueueRequested)
	return connection.QueueCleared{ClearID: r.ClearID, Scope: r.Scope, RequestedBy: r.RequestedBy, Reason: r.Reason,
		RequestedAt: r.RequestedAt, Purged: r.Purge, PurgedCount: r.PurgeCount, InFlight: r.InFlight,
		InFlightCount: len(r.InFlight), CompletedBy: "clearing-process", CompletedAt: at(1), Then: r.Then,
		QueueAfter: connection.QueueStatusOpen}
}

// clearedHeld is cleared(req) for a clear that leaves the queue held.
func clearedHeld(req connection.Event) connection.Event {
	e := cleared(req).(connection.QueueCleared)
	e.QueueAfter = connection.QueueStatusHeld
	return e
}

func banned() []connection.Event {
	return []connection.Event{
		connection.ConnectionBanned{Kind: connection.BanTemporary, ExpiresAt: at(60), ReasonCode: "101", Cause: connection.ReasonSentToTooManyPeople, Actor: "system", BannedAt: t0},
		connection.QueueHeld{Reason: connection.HoldOnBan, Note: "101", Actor: connection.SystemActor, HeldAt: t0},
	}
}

func opHeld() connection.Event {
	return connection.QueueHeld{Reason: connection.HoldByOperator, Actor: "op", HeldAt: t0}
}

func history(parts ...any) []connection.Event {
	var out []connection.Event
	for _, p := range parts {
		switch p := p.(type) {
		case connection.Event:
			out = append(out, p)
		case []connection.Event:
			out = append(out, p...)
		default:
			panic("history: not an event")
		}
	}
	return out
}

func load(t testing.TB, events []connection.Event) *connection.Connection {
	t.Helper()
	c, err := connection.Load(events...)
	if err != nil {
		t.Fatalf("load given events: %v", err)
	}
	return c
}

// decision is one given/when/then case.
type decision struct {
	name  string
	given []connection.Event
	when  func(*connection.Connection) ([]connection.Event, error)
	// then are the events expected; ignored when err is set.
	then []connection.Event
	// err is the sentinel the error must match (errors.Is); nil expects success.
	err error
	// check, if set, inspects the error (errors.As on typed errors) or the state after then.
	check func(t *testing.T, c *connection.Connection, err error)
}

func runDecisions(t *testing.T, cases []decision) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := load(t, tc.given)
			before, err := c.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			got, err := tc.when(c)
			after, _ := c.Snapshot()
			if string(before) != string(after) {
				t.Fatalf("decision mutated the state:\nbefore %s\nafter  %s", before, after)
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error = %v, want one matching %v", err, tc.err)
				}
				if got != nil {
					t.Fatalf("events = %s with an error, want none", dump(got))
				}
			} else {
				if err != nil {
					t.Fatalf("error = %v, want events %s", err, dump(tc.then))
				}
				want := withFingerprints(tc.then)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("events:\n got %s\nwant %s", dump(got), dump(want))
				}
				for _, e := range got {
					if err := c.Apply(e); err != nil {
						t.Fatalf("apply decided %s: %v", e.EventType(), err)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, c, err)
			}
		})
	}
}

func dump(events []connection.Event) string {
	type typed struct {
		Type string
		Data connection.Event
	}
	out := make([]typed, len(events))
	for i, e := range events {
		out[i] = typed{e.EventType(), e}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func asError[T error](t *testing.T, err error) T {
	t.Helper()
	var target T
	if !errors.As(err, &target) {
		t.Fatalf("error %v (%T) is not a %T", err, err, target)
	}
	return target
}

// withFingerprints returns want with the request fingerprint filled into every event that
// accepts an idempotency key and has none, computed from the event's own fields (the request
// they record): a 1:1 MessageQueued from its recipient, text and TTL; a BroadcastStarted from
// the MessageQueued (or BroadcastQueued) events that follow it; a ClearQueueRequested from its scope and reason.
func withFingerprints(want []connection.Event) []connection.Event {
	if want == nil {
		return nil
	}
	out := slices.Clone(want)
	for i, e := range out {
		switch e := e.(type) {
		case connection.MessageQueued:
			if e.Fingerprint == "" && e.BroadcastID == uuid.Nil {
				var ttl time.Duration
				if !e.ExpiresAt.IsZero() {
					ttl = e.ExpiresAt.Sub(e.QueuedAt)
				}
				e.Fingerprint = connection.EnqueueFingerprintOf(e.Recipient, e.Text, ttl)
				out[i] = e
			}
		case connection.BroadcastStarted:
			if e.Fingerprint == "" {
				var recipients []string
				for _, m := range out[i+1:] {
					if q, ok := m.(connection.MessageQueued); ok && q.BroadcastID == e.BroadcastID {
						recipients = append(recipients, q.Recipient)
					}
					if b, ok := m.(connection.BroadcastQueued); ok && b.BroadcastID == e.BroadcastID {
						recipients = append(recipients, b.Recipients...)
					}
				}
				var ttl time.Duration
				if !e.ExpiresAt.IsZero() {
					ttl = e.ExpiresAt.Sub(e.StartedAt)
				}
				e.Fingerprint = connection.BroadcastFingerprintOf(recipients, e.Text, ttl)
				out[i] = e
			}
		case connection.ClearQueueRequested:
			if e.Fingerprint == "" {
				e.Fingerprint = connection.ClearFingerprint(connection.RequestClear{Scope: e.Scope, Reason: e.Reason, Then: e.Then})
				out[i] = e
			}
		}
	}
	return out
}
