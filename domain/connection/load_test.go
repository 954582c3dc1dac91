package connection_test

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
)

// stream generates a connection stream of n events after registration and pairing: 1:1
// messages queued, dispatched, sent and delivered, with a broadcast of 3 every 100 messages, a
// scoped clear of every other broadcast, and a whole-queue clear every 10,000 messages. It
// calls yield with each event in order, so that a million events need no memory.
func stream(n int, yield func(connection.Event)) {
	ids := make([]uuid.UUID, 64)
	for i := range ids {
		ids[i] = connection.MessageIDFor(tenant, connID, fmt.Sprint(i))
	}
	emitted := 0
	emit := func(e connection.Event) bool {
		if emitted >= n {
			return false
		}
		yield(e)
		emitted++
		return true
	}
	emit(reg)
	emit(paired())
	var seq uint64
	for k := 0; emitted < n; k++ {
		id := ids[k%len(ids)]
		seq++
		if !emit(connection.MessageQueued{MessageID: id, Seq: seq, Recipient: alice, Text: "hi", QueuedBy: "svc", QueuedAt: t0}) ||
			!emit(connection.MessageDispatched{MessageID: id, Seq: seq, DispatchedAt: t0}) ||
			!emit(connection.MessageSent{MessageID: id, Seq: seq, SentAt: t0}) ||
			!emit(connection.MessageDelivered{MessageID: id, Seq: seq, DeliveredAt: t0}) {
			return
		}
		if k%100 == 99 {
			b := connection.BroadcastIDFor(tenant, connID, fmt.Sprint(k))
			for _, e := range broadcast(b, seq+1) {
				if !emit(e) {
					return
				}
			}
			seq += 3
			clear := connection.ClearQueueRequested{ClearID: b, Scope: connection.BroadcastScope(b), RequestedBy: "op", Reason: "r",
				RequestedAt: t0, UpToSeq: seq, Purge: []connection.SeqRange{{From: seq - 2, To: seq}}, PurgeCount: 3,
				InFlight: []connection.InFlightMessage{}}
			if k%200 == 199 {
				clear.Scope = connection.WholeQueue
			}
			if !emit(clear) || !emit(cleared(clear)) {
				return
			}
		}
	}
}

// TestStateStaysSmall checks that the aggregate's state does not grow with the number of
// messages: the snapshot after 1,200,000 events is no larger than after 600,000, and no larger
// than after 4,000 but for the ranges of positions handed over (one per gap a clear leaves in
// this stream; at most connection.MaxReceiptRanges are kept, which both long streams exceed).
func TestStateStaysSmall(t *testing.T) {
	size := func(n int) int {
		c := connection.New()
		stream(n, func(e connection.Event) {
			if err := c.Apply(e); err != nil {
				t.Fatal(err)
			}
		})
		if c.Version() != int64(n-1) {
			t.Fatalf("version %d after %d events", c.Version(), n)
		}
		snap, err := c.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		return len(snap)
	}
	const big = 1_200_000
	small, mid, large := size(4_000), size(big/2), size(big)
	// The only growth allowed past the cap is the decimal width of counters and positions
	// (one more digit in each bound of each range kept).
	if large > mid+200+2*connection.MaxReceiptRanges {
		t.Fatalf("snapshot grew from %d bytes (%d events) to %d bytes (%d events)", mid, big/2, large, big)
	}
	const perRange = len(`1234567,1234567,`)
	if limit := small + 200 + connection.MaxReceiptRanges*perRange; large > limit {
		t.Fatalf("snapshot of %d bytes after %d events, want at most %d", large, big, limit)
	}
}

// BenchmarkLoad applies streams of growing length to show that loading cost per event and the
// state's size stay flat: compare ns/event and state-bytes across the sizes.
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		events := make([]connection.Event, 0, n)
		stream(n, func(e connection.Event) { events = append(events, e) })
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var c *connection.Connection
			for b.Loop() {
				c = connection.New()
				for _, e := range events {
					if err := c.Apply(e); err != nil {
						b.Fatal(err)
					}
				}
			}
			snap, err := c.Snapshot()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/event")
			b.ReportMetric(float64(len(snap)), "state-bytes")
		})
	}
}

// BenchmarkRestoreSnapshot shows the cost of loading from a cached snapshot instead.
func BenchmarkRestoreSnapshot(b *testing.B) {
	c := connection.New()
	stream(1_000_000, func(e connection.Event) { _ = c.Apply(e) })
	snap, err := c.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := connection.Restore(snap); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStartBroadcast measures a broadcast of MaxRecipients recipients: "prepare"
// validates and normalises every number (once per command), "decide" is the part a command
// handler repeats on a wrong expected revision.
func BenchmarkStartBroadcast(b *testing.B) {
	c := load(b, base)
	rcpts := make([]string, connection.MaxRecipients)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("+49 170 1%06d", i)
	}
	cmd := connection.StartBroadcast{BroadcastID: bcastID, Recipients: rcpts, Text: "sale", Actor: "svc"}
	var p connection.PreparedBroadcast
	b.Run("prepare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if p, err = connection.PrepareBroadcast(cmd, c.Region()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decide", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			events, err := c.StartPreparedBroadcast(p, t0)
			if err != nil || len(events) != len(rcpts)+1 {
				b.Fatalf("%d events, %v", len(events), err)
			}
		}
	})
}
