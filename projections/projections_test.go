package projections_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
	"github.com/waqueue/waqueue/projections/clearkit"
)

func TestEndToEndThenRebuild(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		q, ps := allProjections()
		cards, status, audit, analytics := ps[1].(*projections.Cards), ps[2].(*projections.MessageStatus), ps[3].(*projections.Audit), ps[4].(*projections.Analytics)
		r := startRunner(t, e, ps...)
		completer := &clearkit.Completer{Store: e.store}
		_, stopProcess := startProcess(t, e, q, completer)
		s := &scenario{}
		buildScenario(t, e, s, checkpoints{
			afterQueued: func() {
				r.waitFor(t, e, ps...)
				got, err := q.NextPending(ctx, e.db, connection.Key(tenantA, connA), 0, 100)
				if err != nil {
					t.Fatal(err)
				}
				if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(seqs(got), want) {
					t.Fatalf("pending seqs = %v, want %v", seqs(got), want)
				}
				if got[2].Text != "sale" || got[2].ExpiresAt.IsZero() || got[0].Text != "hello k1" {
					t.Errorf("pending texts/expiry = %+v", got[:3])
				}
				if page, _ := q.NextPending(ctx, e.db, connection.Key(tenantA, connA), 2, 3); !slices.Equal(seqs(page), []uint64{3, 4, 5}) {
					t.Errorf("page after 2 = %v", seqs(page))
				}
				sum, err := q.Summary(ctx, e.db, tenantA, connA)
				if err != nil {
					t.Fatal(err)
				}
				if sum.Pending != 8 || sum.Status != connection.QueueStatusOpen || len(sum.Broadcasts) != 1 || sum.Broadcasts[0].Pending != 5 || sum.Oldest.Seq != 1 {
					t.Errorf("summary = %+v", sum)
				}
				_, err = q.Summary(ctx, e.db, tenantB, connA)
				mustNotFound(t, "summary across tenants", err)
			},
			afterDelivered: func() {
				r.waitFor(t, e, ps...)
				if fl, _ := q.InFlight(ctx, e.db, connA); len(fl) != 0 {
					t.Errorf("in flight after delivery = %v", seqs(fl))
				}
				v, err := status.Message(ctx, e.db, tenantA, s.m1)
				if err != nil {
					t.Fatal(err)
				}
				var hist []string
				for _, h := range v.History {
					hist = append(hist, h.Status.String())
				}
				if v.Status != connection.MessageStatusDelivered || v.ServerID != "srv-1" ||
					!slices.Equal(hist, []string{"queued", "dispatched", "sent", "delivered"}) || !v.History[1].At.Equal(at(5)) {
					t.Errorf("m1 = %+v history %v", v, hist)
				}
			},
			afterClear1: func() {
				r.waitFor(t, e, ps...)
				got, err := q.NextPending(ctx, e.db, connection.Key(tenantA, connA), 0, 100)
				if err != nil {
					t.Fatal(err)
				}
				if want := []uint64{2, 8}; !slices.Equal(seqs(got), want) {
					t.Errorf("pending after broadcast clear = %v, want %v", seqs(got), want)
				}
				if got, _ := q.NextPending(ctx, e.db, connection.Key(tenantA, connA), 2, 1); !slices.Equal(seqs(got), []uint64{8}) {
					t.Errorf("next after 2 = %v, want [8] (jumping the purged broadcast)", seqs(got))
				}
				p, err := status.Broadcast(ctx, e.db, tenantA, s.bc)
				if err != nil {
					t.Fatal(err)
				}
				if p.Count != 5 || p.Purged != 5 || p.Queued != 0 {
					t.Errorf("broadcast progress = %+v", p)
				}
			},
		})
		r.waitFor(t, e, ps...)

		// Queue: nothing pending, held again after the clear (the ban held it).
		if got, _ := q.NextPending(ctx, e.db, connection.Key(tenantA, connA), 0, 100); len(got) != 0 {
			t.Errorf("pending after whole clear = %v", seqs(got))
		}
		sum, err := q.Summary(ctx, e.db, tenantA, connA)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Pending != 0 || sum.InFlight != 0 || sum.Status != connection.QueueStatusHeld || sum.Oldest != nil || len(sum.Broadcasts) != 0 || sum.LastSeq != 8 {
			t.Errorf("summary after clears = %+v", sum)
		}
		// Cards.
		card, err := cards.Card(ctx, e.db, tenantA, connA)
		if err != nil {
			t.Fatal(err)
		}
		if card.LinkStatus != connection.LinkStatusBanned || card.QueueStatus != connection.QueueStatusHeld || card.Pending != 0 ||
			card.Ban == nil || card.Ban.Kind != connection.BanTemporary || !card.Ban.ExpiresAt.Equal(at(60*24)) || card.Ban.Reason != "101" ||
			card.Hold == nil || card.Hold.Reason != connection.HoldOnBan || card.Clear != nil || card.Phone != "+491701234567" {
			t.Errorf("card = %+v ban %+v hold %+v", card, card.Ban, card.Hold)
		}
		list, err := cards.List(ctx, e.db, tenantA)
		if err != nil || len(list) != 1 || list[0].ConnectionID != connA {
			t.Errorf("cards of A = %+v, %v", list, err)
		}
		_, err = cards.Card(ctx, e.db, tenantB, connA)
		mustNotFound(t, "card across tenants", err)
		// Message status: purged via the ranges, before and after materialization.
		checkPurged := func(when string) {
			for _, id := range []struct {
				msg, clear uuid.UUID
			}{{s.m2, s.clear2}, {s.m3, s.clear2}, {connection.BroadcastMessageID(s.bc, 4), s.clear1}} {
				v, err := status.Message(ctx, e.db, tenantA, id.msg)
				if err != nil {
					t.Fatal(err)
				}
				if v.Status != connection.MessageStatusPurged || v.ClearID != id.clear || v.History[len(v.History)-1].Status != connection.MessageStatusPurged {
					t.Errorf("%s: message %x = %+v", when, id.msg, v)
				}
			}
			_, err := status.Message(ctx, e.db, tenantB, s.m2)
			mustNotFound(t, "message across tenants", err)
		}
		checkPurged("before collect")
		collectAll(t, e)
		checkPurged("after collect")
		var left int
		if err := e.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM queue_messages WHERE conn_id = $1) + (SELECT COUNT(*) FROM queue_runs WHERE conn_id = $1)`, connection.Key(tenantA, connA)).Scan(&left); err != nil || left != 0 {
			t.Errorf("queue rows left after collect = %d (%v)", left, err)
		}
		// Audit.
		page, err := audit.Entries(ctx, e.db, tenantA, projections.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, en := range page.Entries {
			types = append(types, en.EventType)
		}
		wantTypes := []string{"ConnectionRegistered", "SessionPaired", "ClearQueueRequested", "QueueCleared", "ConnectionBanned", "QueueHeld", "ClearQueueRequested", "QueueCleared"}
		if !slices.Equal(types, wantTypes) {
			t.Errorf("audit types = %v, want %v", types, wantTypes)
		}
		if en := page.Entries[2]; en.Actor != "alice" || en.Reason != "ban risk" || en.ConnectionID != connA || en.Seq != 3 {
			t.Errorf("clear request entry = %+v", en)
		}
		if en := page.Entries[3]; en.Actor != "clearing-process" {
			t.Errorf("QueueCleared entry actor = %q", en.Actor)
		}
		p1, err := audit.Entries(ctx, e.db, tenantA, projections.AuditFilter{EventType: "ClearQueueRequested", Limit: 1})
		if err != nil || len(p1.Entries) != 1 || p1.NextCursor == "" {
			t.Fatalf("page 1 = %+v, %v", p1, err)
		}
		p2, err := audit.Entries(ctx, e.db, tenantA, projections.AuditFilter{EventType: "ClearQueueRequested", Limit: 1, Cursor: p1.NextCursor})
		if err != nil || len(p2.Entries) != 1 || p2.NextCursor != "" || p2.Entries[0].Seq <= p1.Entries[0].Seq {
			t.Errorf("page 2 = %+v, %v", p2, err)
		}
		if pb, _ := audit.Entries(ctx, e.db, tenantB, projections.AuditFilter{}); len(pb.Entries) != 1 || pb.Entries[0].ConnectionID != connB {
			t.Errorf("audit of B = %+v", pb)
		}
		if v, err := audit.Verify(ctx, e.db, tenantA); err != nil || !v.OK || v.Checked != 8 {
			t.Errorf("verify = %+v, %v", v, err)
		}
		// Analytics.
		days, err := analytics.Daily(ctx, e.db, tenantA, projections.AnalyticsQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var sumA projections.DailyCounts
		for _, d := range days {
			sumA.Queued += d.Queued
			sumA.Dispatched += d.Dispatched
			sumA.Sent += d.Sent
			sumA.Delivered += d.Delivered
			sumA.Purged += d.Purged
			sumA.Bans += d.Bans
			sumA.Clears += d.Clears
			if d.ConnectionID != connA {
				t.Errorf("analytics of A shows %q", d.ConnectionID)
			}
		}
		if got := fmt.Sprint(sumA.Queued, sumA.Dispatched, sumA.Sent, sumA.Delivered, sumA.Purged, sumA.Bans, sumA.Clears); got != "8 1 1 1 7 1 2" {
			t.Errorf("analytics queued dispatched sent delivered purged bans clears = %s, want 8 1 1 1 7 1 2", got)
		}
		if n := countEvents(t, e, connection.StreamName(connection.Key(tenantA, connA)), connection.TypeQueueCleared); n != 2 {
			t.Errorf("QueueCleared events = %d, want 2", n)
		}

		// Rebuild equals incremental, and calls no completer for completed clears.
		before := dump(t, e.db, readModelTables...)
		r.stop()
		stopProcess()
		for _, p := range ps {
			if err := r.runner.Rebuild(ctx, p.Name()); err != nil {
				t.Fatal(err)
			}
		}
		q2, ps2 := allProjections()
		completer2 := &clearkit.Completer{Store: e.store}
		proc2, _ := startProcess(t, e, q2, completer2)
		r2 := startRunner(t, e, ps2...)
		r2.waitFor(t, e, ps2...)
		if n, err := proc2.Sweep(ctx); err != nil || n != 0 {
			t.Errorf("sweep after rebuild called the completer %d times (%v)", n, err)
		}
		collectAll(t, e)
		if after := dump(t, e.db, readModelTables...); after != before {
			t.Errorf("rebuild differs from incremental:\nincremental:\n%s\nrebuilt:\n%s", before, after)
		}
		if completer2.Calls() != 0 {
			t.Errorf("completer called %d times during the rebuild", completer2.Calls())
		}
	})
}
