package connection_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

func TestMessageEventOf(t *testing.T) {
	want := map[string]connection.MessageStatus{
		connection.TypeMessageQueued: connection.MessageStatusQueued, connection.TypeMessageDispatched: connection.MessageStatusDispatched,
		connection.TypeMessageSent: connection.MessageStatusSent, connection.TypeMessageDelivered: connection.MessageStatusDelivered,
		connection.TypeMessageRead: connection.MessageStatusRead, connection.TypeMessageFailed: connection.MessageStatusFailed,
		connection.TypeMessageExpired: connection.MessageStatusExpired, connection.TypeMessageOutcomeUnknown: connection.MessageStatusUnknown,
		connection.TypeMessageCancelled: connection.MessageStatusCancelled,
	}
	for _, e := range oneOfEach() {
		me, ok := connection.MessageEventOf(e)
		status, isMsg := want[e.EventType()]
		if ok != isMsg || me.Status != status {
			t.Errorf("%s: %+v, %v; want status %v, %v", e.EventType(), me, ok, status, isMsg)
		}
		if ok && (me.MessageID == uuid.Nil || me.Seq == 0) {
			t.Errorf("%s: no message id or seq: %+v", e.EventType(), me)
		}
	}
}

func TestCanBecome(t *testing.T) {
	q, d, s, dl, r := connection.MessageStatusQueued, connection.MessageStatusDispatched, connection.MessageStatusSent,
		connection.MessageStatusDelivered, connection.MessageStatusRead
	f, p, e, u := connection.MessageStatusFailed, connection.MessageStatusPurged, connection.MessageStatusExpired, connection.MessageStatusUnknown
	cx := connection.MessageStatusCancelled
	all := []connection.MessageStatus{q, d, s, dl, r, f, p, e, u, cx}
	allowed := map[[2]connection.MessageStatus]bool{
		{q, d}: true, {q, p}: true, {q, e}: true, {q, cx}: true,
		{d, s}: true, {d, dl}: true, {d, r}: true, {d, f}: true, {d, u}: true,
		{s, dl}: true, {s, r}: true, {dl, r}: true,
	}
	for _, from := range all {
		for _, to := range all {
			if got := from.CanBecome(to); got != allowed[[2]connection.MessageStatus{from, to}] {
				t.Errorf("%s.CanBecome(%s) = %v", from, to, got)
			}
		}
		if from.IsFinal() != !slicesAny(all, from.CanBecome) {
			t.Errorf("%s: IsFinal %v disagrees with CanBecome", from, from.IsFinal())
		}
	}
}

func slicesAny(all []connection.MessageStatus, f func(connection.MessageStatus) bool) bool {
	for _, s := range all {
		if f(s) {
			return true
		}
	}
	return false
}

func TestCovers(t *testing.T) {
	req := clearRequested(connection.WholeQueue, 9, []connection.SeqRange{{From: 2, To: 3}, {From: 7, To: 9}}, nil).(connection.ClearQueueRequested)
	done := cleared(req).(connection.QueueCleared)
	for seq, want := range map[uint64]bool{1: false, 2: true, 3: true, 4: false, 6: false, 7: true, 9: true, 10: false} {
		if req.Covers(seq) != want || done.Covers(seq) != want {
			t.Errorf("Covers(%d) = %v/%v, want %v", seq, req.Covers(seq), done.Covers(seq), want)
		}
	}
}

func TestErrorCode(t *testing.T) {
	// Real refusals, produced by decisions, wrapped as a command handler would.
	c := load(t, history(base, queued(1), queued(2), dispatched(msgID(1), 1)))
	clearing := load(t, history(base, clearRequested(connection.WholeQueue, 0, nil, nil)))
	for want, run := range map[connection.Code]func() ([]connection.Event, error){
		connection.CodeInvalidPhone:  enq("k", "1", "x").bind(c),
		connection.CodeQueueClearing: enq("k", alice, "x").bind(clearing),
		connection.CodeAlreadyDisposed: func() ([]connection.Event, error) {
			return c.Dispatch(connection.DispatchMessage{MessageID: msgID(1), Seq: 1}, t0)
		},
		connection.CodeNotHeld: func() ([]connection.Event, error) { return c.Resume(connection.ResumeQueue{Actor: "op"}, t0) },
		connection.CodeNotInFlight: func() ([]connection.Event, error) {
			return c.RecordOutcome(connection.Outcome{MessageID: msgID(2), Seq: 2, Kind: connection.MessageStatusSent}, t0)
		},
		connection.CodeNotRegistered: enq("k", alice, "x").bind(connection.New()),
	} {
		_, err := run()
		if got, ok := connection.ErrorCode(fmt.Errorf("command: %w", err)); !ok || got != want {
			t.Errorf("ErrorCode(%v) = %q, %v; want %q", err, got, ok, want)
		}
	}
	if code, ok := connection.ErrorCode(fmt.Errorf("disk full")); ok || code != "" {
		t.Fatalf("foreign error got code %q", code)
	}
}

type when func(*connection.Connection) ([]connection.Event, error)

func (w when) bind(c *connection.Connection) func() ([]connection.Event, error) {
	return func() ([]connection.Event, error) { return w(c) }
}

func TestInFlightLimit(t *testing.T) {
	c := load(t, base)
	for i := uint64(1); i <= connection.MaxInFlight+1; i++ {
		must(t, c)(c.Enqueue(connection.EnqueueMessage{IdempotencyKey: fmt.Sprint("k", i), Recipient: alice, Text: "x", Actor: "svc"}, t0))
	}
	for i := uint64(1); i <= connection.MaxInFlight; i++ {
		must(t, c)(c.Dispatch(connection.DispatchMessage{MessageID: msgID(i), Seq: i}, t0))
	}
	next := uint64(connection.MaxInFlight + 1)
	if _, err := c.Dispatch(connection.DispatchMessage{MessageID: msgID(next), Seq: next}, t0); !isCode(err, connection.CodeInFlightLimit) {
		t.Fatalf("dispatch beyond the in-flight limit: %v", err)
	}
	must(t, c)(c.RecordOutcome(connection.Outcome{MessageID: msgID(1), Seq: 1, Kind: connection.MessageStatusUnknown, Detail: "timeout"}, t0))
	must(t, c)(c.Dispatch(connection.DispatchMessage{MessageID: msgID(next), Seq: next}, t0))
}

func isCode(err error, code connection.Code) bool {
	got, ok := connection.ErrorCode(err)
	return ok && got == code
}

func must(t *testing.T, c *connection.Connection) func([]connection.Event, error) {
	return func(events []connection.Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if err := c.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestErrorText(t *testing.T) {
	c := load(t, history(base, queued(1), dispatched(msgID(1), 1)))
	_, err := c.Resume(connection.ResumeQueue{Actor: "op"}, t0)
	if got, want := err.Error(), `connection: resume "c1": queue not held`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	_, err = c.Dispatch(connection.DispatchMessage{MessageID: msgID(1), Seq: 1}, t0)
	if got := err.Error(); !strings.HasPrefix(got, `connection: dispatch "c1": message `) || strings.Count(got, "connection:") != 1 ||
		!strings.Contains(got, "already dispatched, expired or purged (head 0, last 1)") {
		t.Errorf("Error() = %q", got)
	}
}
