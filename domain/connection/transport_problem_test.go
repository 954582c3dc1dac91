package connection_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/waqueue/waqueue/domain/connection"
)

func observe(kind connection.TransportProblemKind, reason, detail string) when {
	return func(c *connection.Connection) ([]connection.Event, error) {
		return c.ObserveTransportProblem(connection.ObserveTransportProblem{Kind: kind, Reason: reason, Detail: detail}, at(7))
	}
}

// unchangedBy checks that applying the decided events left link, queue, ban, hold, counters
// and pending messages as they were after the given history.
func unchangedBy(given []connection.Event) func(*testing.T, *connection.Connection, error) {
	return func(t *testing.T, c *connection.Connection, _ error) {
		t.Helper()
		before := load(t, given)
		type view struct {
			Link    connection.LinkStatus
			Queue   connection.QueueStatus
			Ban     connection.BanInfo
			Hold    connection.HoldInfo
			Count   connection.Counters
			Pending uint64
		}
		see := func(c *connection.Connection) view {
			ban, _ := c.CurrentBan()
			hold, _ := c.CurrentHold()
			return view{c.LinkStatus(), c.QueueStatus(), ban, hold, c.Counters(), c.Pending()}
		}
		if got, want := see(c), see(before); !reflect.DeepEqual(got, want) {
			t.Fatalf("state changed by TransportProblemObserved:\n got %+v\nwant %+v", got, want)
		}
		if c.Version() != before.Version()+1 {
			t.Fatalf("version = %d, want %d", c.Version(), before.Version()+1)
		}
	}
}

func TestObserveTransportProblem(t *testing.T) {
	bannedHeld := history(base, queued(1), banned())
	clearing := history(base, queued(1), clearRequested(connection.WholeQueue, 1, []connection.SeqRange{{From: 1, To: 1}}, nil))
	cases := []decision{
		{name: "stream replaced on an active connection", given: history(base, queued(1)),
			when: observe(connection.ProblemStreamReplaced, "conflict", "replaced by another client"),
			then: []connection.Event{connection.TransportProblemObserved{Kind: connection.ProblemStreamReplaced,
				Reason: "conflict", Detail: "replaced by another client", ObservedAt: at(7)}},
			check: unchangedBy(history(base, queued(1)))},
		{name: "connect failure while unpaired", given: history(reg), when: observe(connection.ProblemConnectFailure, "405", ""),
			then:  []connection.Event{connection.TransportProblemObserved{Kind: connection.ProblemConnectFailure, Reason: "405", ObservedAt: at(7)}},
			check: unchangedBy(history(reg))},
		{name: "keep-alive timeout while banned keeps ban and hold", given: bannedHeld, when: observe(connection.ProblemKeepAliveTimeout, "", ""),
			then:  []connection.Event{connection.TransportProblemObserved{Kind: connection.ProblemKeepAliveTimeout, ObservedAt: at(7)}},
			check: unchangedBy(bannedHeld)},
		{name: "client outdated while clearing", given: clearing, when: observe(connection.ProblemClientOutdated, "", "update the client"),
			then:  []connection.Event{connection.TransportProblemObserved{Kind: connection.ProblemClientOutdated, Detail: "update the client", ObservedAt: at(7)}},
			check: unchangedBy(clearing)},
		{name: "zero kind", given: base, when: observe(connection.TransportProblemKind{}, "x", ""),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeInvalidProblemKind)},
		{name: "reason too long", given: base, when: observe(connection.ProblemConnectFailure, strings.Repeat("r", connection.MaxNoteLen+1), ""),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeTooLong)},
		{name: "detail not UTF-8", given: base, when: observe(connection.ProblemConnectFailure, "", "\xff"),
			err: connection.ErrInvalidCommand, check: wantCode(connection.CodeTooLong)},
		{name: "connection not registered", when: observe(connection.ProblemStreamReplaced, "", ""), err: connection.ErrNotRegistered},
	}
	runDecisions(t, cases)
}

func TestTransportProblemKindDecodeRefusesUnknownKinds(t *testing.T) {
	for _, kind := range []string{"stream_replaced", "client_outdated", "keepalive_timeout", "connect_failure"} {
		e, err := connection.Decode(connection.TypeTransportProblemObserved, []byte(`{"kind":"`+kind+`","observed_at":"2026-11-25T12:00:00Z"}`))
		if err != nil {
			t.Fatalf("decode kind %s: %v", kind, err)
		}
		if got := e.(connection.TransportProblemObserved).Kind.String(); got != kind {
			t.Fatalf("kind = %q, want %q", got, kind)
		}
	}
	if _, err := connection.Decode(connection.TypeTransportProblemObserved, []byte(`{"kind":"solar_flare"}`)); err == nil {
		t.Fatal("decoded an unknown transport problem kind")
	}
}
