package projections_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/waqueue/waqueue/domain/connection"
	"github.com/waqueue/waqueue/projections"
)

// TestTransportProblemsOnTheCard records transport problems in every link status and checks
// that the card shows the last one, that they change neither link nor queue, that pairing and
// a lifted ban clear them, and that each one is audited.
func TestTransportProblemsOnTheCard(t *testing.T) {
	eachEngine(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		do := registerA(t, e, "system")
		observe := func(kind connection.TransportProblemKind, reason string, min int) {
			t.Helper()
			do(func(c *connection.Connection) ([]connection.Event, error) {
				return c.ObserveTransportProblem(connection.ObserveTransportProblem{Kind: kind, Reason: reason, Detail: "d"}, at(min))
			})
		}
		cards, audit := projections.NewCards(), projections.NewAudit()
		r := startRunner(t, e, cards, audit)
		check := func(step string, link connection.LinkStatus, held bool, problem string, problemAt time.Time) {
			t.Helper()
			r.waitFor(t, e, cards, audit)
			card, err := cards.Card(ctx, e.db, tenantA, connA)
			if err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			if card.LinkStatus != link || (card.Hold != nil) != held || card.LastProblem != problem || !card.LastProblemAt.Equal(problemAt) {
				t.Fatalf("%s: card link %v hold %+v problem %q at %v; want link %v held %v problem %q at %v", step,
					card.LinkStatus, card.Hold, card.LastProblem, card.LastProblemAt, link, held, problem, problemAt)
			}
		}

		observe(connection.ProblemConnectFailure, "500", 1)
		check("connect failure while unpaired", connection.LinkStatusUnpaired, false, "connect_failure: 500", at(1))
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Pair(connection.PairSession{Actor: "system"}, at(2))
		})
		check("paired", connection.LinkStatusActive, false, "", time.Time{})
		observe(connection.ProblemStreamReplaced, "", 3)
		check("stream replaced", connection.LinkStatusActive, false, "stream_replaced", at(3))
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.Ban(connection.BanConnection{Kind: connection.BanTemporary, ExpiresAt: at(60), ReasonCode: "101", Actor: "system"}, at(4))
		})
		observe(connection.ProblemKeepAliveTimeout, "", 5)
		check("keep-alive timeout while banned", connection.LinkStatusBanned, true, "keepalive_timeout", at(5))
		do(func(c *connection.Connection) ([]connection.Event, error) {
			return c.LiftBan(connection.LiftBan{Actor: "system"}, at(6))
		})
		check("ban lifted", connection.LinkStatusActive, true, "", time.Time{})
		observe(connection.ProblemClientOutdated, "405", 7)
		check("client outdated", connection.LinkStatusActive, true, "client_outdated: 405", at(7))

		page, err := audit.Entries(ctx, e.db, tenantA, projections.AuditFilter{ConnectionID: connA, EventType: connection.TypeTransportProblemObserved})
		if err != nil {
			t.Fatal(err)
		}
		var reasons []string
		for _, en := range page.Entries {
			reasons = append(reasons, en.Reason)
			if en.Actor != "system" {
				t.Errorf("audit entry %+v: actor %q, want system", en, en.Actor)
			}
		}
		if want := []string{"500", "", "", "405"}; !slices.Equal(reasons, want) {
			t.Fatalf("audited transport problems: reasons %q, want %q", reasons, want)
		}
		if v, err := audit.Verify(ctx, e.db, tenantA); err != nil || !v.OK {
			t.Fatalf("audit chain: %+v, %v", v, err)
		}
	})
}
