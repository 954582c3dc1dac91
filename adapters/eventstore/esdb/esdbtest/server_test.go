package esdbtest_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/waqueue/waqueue/adapters/eventstore/esdb/esdbtest"
	"github.com/waqueue/waqueue/internal/testwait"
)

// These tests hold the server to EventStoreDB's documented protocol behaviour, through the
// raw v4.2.0 client.

func rawClient(t *testing.T) *esdb.Client {
	t.Helper()
	cfg, err := esdb.ParseConnectionString(esdbtest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Limit)
	t.Cleanup(cancel)
	return ctx
}

func appendN(t *testing.T, c *esdb.Client, stream, typ string, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	evs := make([]esdb.EventData, n)
	for i := range evs {
		ids[i] = uuid.New()
		evs[i] = esdb.EventData{EventID: ids[i], EventType: typ, ContentType: esdb.ContentTypeBinary, Data: []byte{0, byte(i), 0xff}, Metadata: []byte("meta")}
	}
	if _, err := c.AppendToStream(ctxT(t), stream, esdb.AppendToStreamOptions{}, evs...); err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return ids
}

// reader drains reads: reader{t}.all(c.ReadStream(...)).
type reader struct{ t *testing.T }

func (r reader) all(rs *esdb.ReadStream, err error) []*esdb.RecordedEvent {
	t := r.t
	t.Helper()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	defer rs.Close()
	var out []*esdb.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		out = append(out, ev.Event)
	}
}

func TestAppendAndReadStream(t *testing.T) {
	c := rawClient(t)
	ids := appendN(t, c, "s-1", "T", 3)

	res, err := c.AppendToStream(ctxT(t), "s-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Revision(2)},
		esdb.EventData{EventID: uuid.New(), EventType: "T", Data: []byte("{}")})
	if err != nil || res.NextExpectedVersion != 3 || res.CommitPosition == 0 {
		t.Fatalf("append at revision 2: got %+v, %v; want revision 3 and a position", res, err)
	}
	_, err = c.AppendToStream(ctxT(t), "s-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}},
		esdb.EventData{EventID: uuid.New(), EventType: "T", Data: []byte("{}")})
	var ee *esdb.Error
	if !errors.As(err, &ee) || ee.Code() != esdb.ErrorCodeWrongExpectedVersion || !strings.Contains(err.Error(), "but got '3'") {
		t.Fatalf("append with no_stream to an existing stream: got %v, want wrong expected version with current 3", err)
	}

	got := reader{t}.all(c.ReadStream(ctxT(t), "s-1", esdb.ReadStreamOptions{}, 10))
	if len(got) != 4 || got[0].EventID != ids[0] || got[2].EventID != ids[2] {
		t.Fatalf("read forwards: got %d events, want 4 starting with the appended ids", len(got))
	}
	if string(got[1].Data) != "\x00\x01\xff" || string(got[1].UserMetadata) != "meta" || got[1].ContentType != "application/octet-stream" {
		t.Fatalf("binary body, metadata or content type did not round-trip: %q %q %q", got[1].Data, got[1].UserMetadata, got[1].ContentType)
	}
	back := reader{t}.all(c.ReadStream(ctxT(t), "s-1", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 2))
	if len(back) != 2 || back[0].EventNumber != 3 || back[1].EventNumber != 2 {
		t.Fatalf("read backwards from end, 2: got %d events", len(back))
	}

	rs, err := c.ReadStream(ctxT(t), "missing", esdb.ReadStreamOptions{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if _, err := rs.Recv(); !errors.As(err, &ee) || ee.Code() != esdb.ErrorCodeResourceNotFound {
		t.Fatalf("read of a missing stream: got %v, want ResourceNotFound (stream not found)", err)
	}
}

func TestReadAllInclusiveSubscribeExclusive(t *testing.T) {
	c := rawClient(t)
	appendN(t, c, "a-1", "T", 3)
	all := reader{t}.all(c.ReadAll(ctxT(t), esdb.ReadAllOptions{}, 100))
	if len(all) != 3 {
		t.Fatalf("read $all: got %d events, want 3", len(all))
	}
	from := reader{t}.all(c.ReadAll(ctxT(t), esdb.ReadAllOptions{From: all[1].Position}, 100))
	if len(from) != 2 || from[0].EventID != all[1].EventID {
		t.Fatalf("read $all from the 2nd event's position: got %d events, want 2 starting with it (inclusive)", len(from))
	}

	sub, err := c.SubscribeToAll(ctxT(t), esdb.SubscribeToAllOptions{From: all[1].Position})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Close()
	if ev := sub.Recv(); ev.EventAppeared == nil || ev.EventAppeared.Event.EventID != all[2].EventID {
		t.Fatalf("subscription from the 2nd event's position: first message %+v, want the 3rd event (exclusive)", ev)
	}
	if ev := sub.Recv(); ev.CaughtUp == nil {
		t.Fatalf("after the history: got %+v, want caught up", ev)
	}
	live := appendN(t, c, "a-2", "T", 1)
	if ev := sub.Recv(); ev.EventAppeared == nil || ev.EventAppeared.Event.EventID != live[0] {
		t.Fatalf("live: got %+v, want the new event", ev)
	}
}

func TestSubscribeFilters(t *testing.T) {
	c := rawClient(t)
	appendN(t, c, "keep-1", "$sys", 1)
	keep := appendN(t, c, "keep-1", "Kept", 1)
	appendN(t, c, "drop-1", "Kept", 1)
	for _, f := range []*esdb.SubscriptionFilter{
		{Type: esdb.StreamFilterType, Prefixes: []string{"keep-"}},
		{Type: esdb.StreamFilterType, Regex: "^keep-"},
	} {
		sub, err := c.SubscribeToAll(ctxT(t), esdb.SubscribeToAllOptions{From: esdb.Start{}, Filter: f})
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		var got []uuid.UUID
		for ev := sub.Recv(); ev.CaughtUp == nil; ev = sub.Recv() {
			if ev.SubscriptionDropped != nil {
				t.Fatalf("dropped: %v", ev.SubscriptionDropped.Error)
			}
			if ev.EventAppeared != nil {
				got = append(got, ev.EventAppeared.Event.EventID)
			}
		}
		sub.Close()
		if len(got) != 2 || got[1] != keep[0] {
			t.Fatalf("filter %+v: got %v, want the 2 events of keep-1", f, got)
		}
	}
	sub, err := c.SubscribeToAll(ctxT(t), esdb.SubscribeToAllOptions{From: esdb.Start{}, Filter: esdb.ExcludeSystemEventsFilter()})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Close()
	n := 0
	for ev := sub.Recv(); ev.CaughtUp == nil; ev = sub.Recv() {
		if ev.EventAppeared != nil {
			if strings.HasPrefix(ev.EventAppeared.Event.EventType, "$") {
				t.Fatalf("system event delivered through the exclude-system-events filter")
			}
			n++
		}
	}
	if n != 2 {
		t.Fatalf("exclude system events: got %d events, want 2", n)
	}
}
